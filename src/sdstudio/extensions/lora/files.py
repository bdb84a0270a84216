"""LoRA files on disk: reading tensors and metadata, hashes, A1111's names and aliases.

A1111 (extensions-builtin/Lora/network.py, NetworkOnDisk): a LoRA is known by its file name
without extension (`name`) and by `ss_output_name` from its safetensors metadata (`alias`);
its hash is the metadata's `sshs_model_hash` or the "addnet" hash (SHA-256 of everything
after the safetensors header, so editing metadata keeps the hash), and the short hash is the
first 12 hex digits. Metadata values that look like JSON objects/lists are decoded, as
A1111's `read_metadata_from_safetensors` does (ss_tag_frequency, ss_dataset_dirs, ...).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdstudio.errors import ModelLoadError
from sdstudio.models.hashes import addnet_hash_safetensors, sha256_of_file
from sdstudio.models.state_dict import load_state_dict


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor table and `__metadata__`)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 1024 * 1024:
                raise ValueError("header too large")
            return json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({exc}); re-download or remove it") from None


def decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """safetensors metadata with JSON-looking values decoded (A1111's read_metadata_from_safetensors)."""
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        decoded[key] = value
    return decoded


def read_lora_metadata(path: Path) -> dict[str, Any]:
    """Training metadata (`ss_*`, `modelspec.*`, ...) of a LoRA file; {} for .pt/.ckpt."""
    if path.suffix.lower() != ".safetensors":
        return {}
    return decode_metadata(read_safetensors_header(path).get("__metadata__", {}) or {})


@dataclass
class LoraOnDisk:
    """A LoRA file as listed: name, alias, metadata, hash (computed on first use)."""

    name: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    hash: str = ""
    error: str = ""  # why the file cannot be used, once known (unreadable, refused as unsafe)

    @property
    def alias(self) -> str:
        """`ss_output_name` from the metadata, else the file name (A1111)."""
        alias = self.metadata.get("ss_output_name")
        return str(alias) if alias else self.name

    @property
    def shorthash(self) -> str:
        """First 12 hex digits of the hash (what `Lora hashes` in infotext records)."""
        return self.ensure_hash()[:12]

    def ensure_hash(self) -> str:
        """Compute the A1111 hash once: metadata sshs_model_hash, else addnet hash (safetensors) or file SHA-256."""
        if not self.hash:
            given = self.metadata.get("sshs_model_hash")
            if given:
                self.hash = str(given)
            elif self.path.suffix.lower() == ".safetensors":
                self.hash = addnet_hash_safetensors(self.path)
            else:
                self.hash = sha256_of_file(self.path)
        return self.hash

    @property
    def sd_version(self) -> str:
        """ "SDXL", "SD2", "SD1" or "Unknown" from the training metadata (A1111's detect_version)."""
        if str(self.metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
            return "SDXL"
        if str(self.metadata.get("ss_v2", "")) == "True":
            return "SD2"
        return "SD1" if self.metadata else "Unknown"

    @classmethod
    def from_path(cls, path: Path, name: str | None = None) -> LoraOnDisk:
        """Read the metadata of one file (tensors are not loaded)."""
        path = Path(path)
        return cls(name=name or path.stem, path=path, metadata=read_lora_metadata(path))


def load_lora_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a LoRA file on the CPU; .pt/.ckpt go through the safe unpickler."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelLoadError(f"{path}: cannot read LoRA tensors ({exc}); re-download or remove the file") from None
    if suffix in (".pt", ".ckpt", ".bin"):
        state = _load_pickled(path)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ModelLoadError(f"{path}: not a LoRA state dict (found {type(state).__name__})")
        return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    raise ModelLoadError(f"{path}: unsupported LoRA file type {suffix!r}; use .safetensors, .pt or .ckpt")


def _load_pickled(path: Path) -> Any:
    """Pickled tensors through sdstudio's restricted unpickler (nothing in the file runs)."""
    return load_state_dict(path)
