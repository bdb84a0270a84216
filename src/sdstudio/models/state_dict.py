"""Reading model files: tensors from .safetensors and pickled torch files, headers without tensors."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.errors import ModelLoadError, UnsafeFileError

if TYPE_CHECKING:  # torch only where tensors are read: listings read headers, and the CLI's --server needs neither
    import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor table and `__metadata__`), tensors unread.

    The sizes the file declares are checked against its real size before anything is
    read or allocated: a header longer than the file, or a tensor table reaching past its
    end (a cut-short download), is a ModelLoadError saying so.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            raw_length = handle.read(8)
            if len(raw_length) != 8:
                raise ValueError(f"file too short ({file_size} bytes)")
            (length,) = struct.unpack("<Q", raw_length)
            if length > file_size - 8:
                raise ValueError(f"header claims {length} bytes but the file has only {file_size} bytes")
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path.name}: not a valid safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path.name}: not a valid safetensors file (header is not an object)")
    data_size = file_size - 8 - length
    needed = _tensor_data_size(header)
    if needed is None:
        raise ModelLoadError(f"{path.name}: not a valid safetensors file (malformed tensor table)")
    if needed > data_size:
        raise ModelLoadError(
            f"{path.name}: cut short: its header describes {needed} bytes of tensors but only {data_size} "
            "are there (an interrupted download or copy?)"
        )
    return header


def _tensor_data_size(header: dict[str, Any]) -> int | None:
    """Bytes of tensor data a safetensors header describes (the largest end offset); None when malformed."""
    try:
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    return max(ends, default=0)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (training parameters, model spec), tensors unread."""
    metadata = read_safetensors_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        return {}
    return {str(k): str(v) for k, v in metadata.items()}


def read_model_file_metadata(path: str | Path) -> dict[str, str]:
    """What a model file says about itself without its tensors being loaded ({} for pickled files).

    Also the check that a listing makes of every file: ModelLoadError (naming the file and
    why) for an empty file, a safetensors file whose header or size does not add up, a
    torch zip archive that was cut short, or a pickle that asks for anything but tensor data
    (scanned, never unpickled), so such a file is listed as unusable and never the default.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise ModelLoadError(f"{path.name}: empty file (0 bytes)")
        if path.suffix.lower() == SAFETENSORS_SUFFIX:
            return read_safetensors_metadata(path)
        with open(path, "rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"
        if zipped and not zipfile.is_zipfile(path):
            raise ModelLoadError(
                f"{path.name}: cut short: the zip archive has no end (an interrupted download or copy?)"
            )
        from sdstudio.models.safe_pickle import check_pickle_file  # with torch: only when there is a pickle

        check_pickle_file(path)
    except UnsafeFileError as exc:
        raise ModelLoadError(str(exc)) from None
    except OSError as exc:
        raise ModelLoadError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    return {}


def unwrap_state_dict(loaded: object) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint, an outer `state_dict` wrapper removed."""
    import torch

    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"expected a dict of tensors, found {type(loaded).__name__}")
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
"""safetensors' dtype names -> torch's."""


def load_state_dict(
    path: str | Path,
    device: str = "cpu",
    float_dtype: torch.dtype | Callable[[str], torch.dtype | None] | None = None,
) -> dict[str, torch.Tensor]:
    """All tensors of a model file (.safetensors, or .ckpt/.pt/.pth/.bin through the safe unpickler).

    `float_dtype` casts floating-point tensors as they are read (a function gives each key's dtype,
    None = as stored). A safetensors file is read one tensor at a time with plain reads, not mapped:
    each tensor's bytes are freed once it is in its dtype, so memory holds the weights as they will
    be used and nothing more (a mapped file would stay resident beside its converted copy).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    dtype_of = float_dtype if callable(float_dtype) else (lambda key: float_dtype)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        header = read_safetensors_header(path)  # sizes checked against the file before anything is read
        try:
            tensors = {}
            entries = sorted(
                ((key, entry) for key, entry in header.items() if key != "__metadata__"),
                key=lambda item: int(item[1]["data_offsets"][0]),
            )
            sizes = [int(entry["data_offsets"][1]) - int(entry["data_offsets"][0]) for _, entry in entries]
            # One staging buffer, reused: each tensor is then one allocation of its final size, and the
            # freed reads do not fragment the heap into memory the process keeps.
            staging = bytearray(max(sizes, default=0))
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                start = 8 + length
                for (key, entry), size in zip(entries, sizes):
                    dtype = getattr(torch, SAFETENSORS_DTYPES[entry["dtype"]])
                    shape = [int(extent) for extent in entry["shape"]]
                    handle.seek(start + int(entry["data_offsets"][0]))
                    if handle.readinto(memoryview(staging)[:size]) != size:
                        raise ValueError(f"{key}: the file ends inside its data")
                    if size == 0:
                        tensor = torch.empty(shape, dtype=dtype)
                    else:
                        read = torch.frombuffer(staging, dtype=dtype, count=size // dtype.itemsize).reshape(shape)
                        wanted = dtype_of(key)
                        convert = wanted is not None and read.is_floating_point() and read.dtype != wanted
                        tensor = read.to(wanted) if convert else read.clone()
                    tensors[key] = tensor if device == "cpu" else tensor.to(device)
            return tensors
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelLoadError(f"{path.name}: not a valid safetensors file ({exc})") from None
    from sdstudio.models.safe_pickle import safe_load

    try:
        tensors = unwrap_state_dict(safe_load(path))
        for key, tensor in tensors.items():
            wanted = dtype_of(key)
            if wanted is not None and tensor.is_floating_point() and tensor.dtype != wanted:
                tensors[key] = tensor.to(wanted)
        return tensors
    except ModelLoadError as exc:
        if str(exc).startswith("expected"):
            raise ModelLoadError(f"{path.name}: {exc}") from exc
        raise
