"""Broken files as users end up with them: model files cut short or empty, images that declare a huge size."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors


def write_bad_model_files(folder: Path, suffixes: tuple[str, ...] = (".safetensors", ".ckpt")) -> dict[str, str]:
    """Write one broken file of each kind into `folder`; returns file name -> words its reason contains."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = save_safetensors({"w": torch.arange(4096, dtype=torch.float32)})
    header = int.from_bytes(whole[:8], "little")
    files = {
        "empty.safetensors": (b"", "empty file"),
        # an 8-byte length prefix of 2**60: seeking there fails with EINVAL, allocating it fails worse
        "huge-header.safetensors": (struct.pack("<Q", 2**60) + b"{}", "header claims"),
        "header-past-end.safetensors": (struct.pack("<Q", 500) + b'{"w": {"dtype"', "header claims"),
        "cut-short.safetensors": (whole[: 8 + header + 1000], "cut short"),  # an interrupted download
        "empty.ckpt": (b"", "empty file"),
        "cut-short.ckpt": (_torch_zip()[:300], "cut short"),
    }
    wanted = {name: value for name, value in files.items() if name.endswith(suffixes)}
    for name, (data, _) in wanted.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in wanted.items()}


def write_good_safetensors(path: Path) -> Path:
    """A small whole safetensors file (lists as usable; not a model that loads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(save_safetensors({"w": torch.zeros(4)}))
    return path


def _torch_zip() -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(256)}}, buffer)
    return buffer.getvalue()


def png_declaring(width: int, height: int, complete: bool = True) -> bytes:
    """A grayscale PNG of `width` × `height`, all black, compressed to ~1/1000 (a decompression bomb).

    `complete=False` leaves the pixel data out: just the header that claims the size.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b""
    if complete:
        packer = zlib.compressobj(9)
        row = b"\0" * (width + 1)  # filter byte + pixels
        data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
