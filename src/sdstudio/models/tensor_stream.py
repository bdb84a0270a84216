"""Safetensors files read and written one tensor at a time, for work on whole checkpoints in bounded memory.

`SafetensorsReader` reads each tensor's bytes with plain file reads when asked (no memory
map: touched pages of a map count as the process's resident memory until it is closed, so
reading two 2 GB checkpoints through maps holds 4 GB). `write_safetensors` takes the table
of names, dtypes and shapes first, writes the header, then asks for each tensor in file
order, so only one tensor is in memory at a time. Files it writes are ordinary safetensors
(readable by `safetensors.safe_open`): tensors sorted by element size, then name, so every
tensor is aligned, as the safetensors library lays them out.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from sdstudio.errors import ModelLoadError
from sdstudio.models.state_dict import read_safetensors_header

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's name, dtype and shape: what a safetensors header says of it."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * self.dtype.itemsize

    def meta(self) -> torch.Tensor:
        """A tensor of this dtype and shape without data (device "meta"): arithmetic on it gives result types."""
        return torch.empty(self.shape, dtype=self.dtype, device="meta")


class SafetensorsReader:
    """The tensors of one .safetensors file, each read from disk when asked (use as a context manager)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header = read_safetensors_header(self.path)  # sizes checked against the file's
        metadata = header.pop("__metadata__", None) or {}
        self.metadata = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
        self._handle: io.BufferedReader = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        (header_length,) = struct.unpack("<Q", self._handle.read(8))
        self._data_start = 8 + header_length
        self.specs: dict[str, TensorSpec] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        try:
            for name, entry in header.items():
                self._add(name, entry)
        except ModelLoadError:
            self.close()
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            self.close()
            raise ModelLoadError(f"{self.path.name}: malformed tensor table ({type(exc).__name__}: {exc})") from None

    def _add(self, name: str, entry: dict[str, Any]) -> None:
        dtype = DTYPES.get(str(entry.get("dtype")))
        if dtype is None:
            raise ModelLoadError(f"{self.path.name}: tensor {name} has an unknown dtype {entry.get('dtype')!r}")
        spec = TensorSpec(name, dtype, tuple(int(size) for size in entry["shape"]))
        begin, end = (int(offset) for offset in entry["data_offsets"])
        if end - begin != spec.nbytes or begin < 0 or any(size < 0 for size in spec.shape):
            raise ModelLoadError(
                f"{self.path.name}: tensor {name} has {end - begin} bytes, its shape and dtype need {spec.nbytes}"
            )
        self.specs[name] = spec
        self._offsets[name] = (begin, end)

    def read(self, name: str) -> torch.Tensor:
        """Tensor `name`, read from the file now (a new CPU tensor that owns its memory)."""
        spec = self.specs[name]
        begin, end = self._offsets[name]
        if end == begin:
            return torch.empty(spec.shape, dtype=spec.dtype)
        buffer = bytearray(end - begin)
        self._handle.seek(self._data_start + begin)
        if self._handle.readinto(buffer) != len(buffer):
            raise ModelLoadError(f"{self.path.name}: cut short inside tensor {name}")
        return torch.frombuffer(buffer, dtype=spec.dtype).reshape(spec.shape)

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def safetensors_layout(
    specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, list[TensorSpec]]:
    """The header bytes (length prefix included, padded to 8) and the order the tensors follow it in."""
    order = sorted(specs, key=lambda spec: (-spec.dtype.itemsize, spec.name))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for spec in order:
        if spec.dtype not in DTYPE_NAMES:
            raise ValueError(f"safetensors cannot hold {spec.dtype} (tensor {spec.name})")
        header[spec.name] = {
            "dtype": DTYPE_NAMES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, order


def write_safetensors(
    path: str | Path,
    specs: Iterable[TensorSpec],
    tensor: Callable[[TensorSpec], torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write a safetensors file whose tensors `tensor(spec)` makes one at a time; returns the file size.

    Each tensor must have its spec's dtype and shape (ValueError otherwise: the header is already written).
    """
    header, order = safetensors_layout(specs, metadata)
    with open(path, "wb") as handle:
        handle.write(header)
        for spec in order:
            value = tensor(spec)
            if value.dtype != spec.dtype or tuple(value.shape) != spec.shape:
                raise ValueError(
                    f"tensor {spec.name}: made {value.dtype} {tuple(value.shape)}, "
                    f"the header says {spec.dtype} {spec.shape}"
                )
            if spec.nbytes:
                handle.write(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
            del value
        handle.flush()
        return os.fstat(handle.fileno()).st_size
