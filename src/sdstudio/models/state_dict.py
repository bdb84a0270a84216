"""Reading model files: tensors from .safetensors and pickled torch files, headers without tensors."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from sdstudio.errors import ModelLoadError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor table and `__metadata__`), tensors unread."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw_length = handle.read(8)
            if len(raw_length) != 8:
                raise ValueError("file too short")
            (length,) = struct.unpack("<Q", raw_length)
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path.name}: not a valid safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path.name}: not a valid safetensors file (header is not an object)")
    return header


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (training parameters, model spec), tensors unread."""
    metadata = read_safetensors_header(path).get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}


def unwrap_state_dict(loaded: object) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint, an outer `state_dict` wrapper removed."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"expected a dict of tensors, found {type(loaded).__name__}")
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def load_state_dict(
    path: str | Path, device: str = "cpu", float_dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """All tensors of a model file (.safetensors, or .ckpt/.pt/.pth/.bin through the safe unpickler).

    `float_dtype` casts floating-point tensors as they are read: one tensor at a time, so an
    fp16 file loaded for fp32 never holds both full copies at once.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        from safetensors import safe_open

        try:
            tensors = {}
            with safe_open(str(path), framework="pt", device=device) as handle:
                for key in handle.keys():
                    tensor = handle.get_tensor(key)
                    if float_dtype is not None and tensor.is_floating_point() and tensor.dtype != float_dtype:
                        tensor = tensor.to(float_dtype)
                    tensors[key] = tensor
            return tensors
        except Exception as exc:
            raise ModelLoadError(f"{path.name}: not a valid safetensors file ({exc})") from None
    from sdstudio.models.safe_pickle import safe_load

    try:
        tensors = unwrap_state_dict(safe_load(path))
        if float_dtype is not None:
            tensors = {
                k: v.to(float_dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in tensors.items()
            }
        return tensors
    except ModelLoadError as exc:
        if str(exc).startswith("expected"):
            raise ModelLoadError(f"{path.name}: {exc}") from exc
        raise
