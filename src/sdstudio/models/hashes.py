"""A1111's model hashes, cached by (path, size, mtime) so a restart does not re-hash.

- sha256: of the whole file; the short hash is its first 10 hex digits (A1111 titles
  look like `name.safetensors [abcdef1234]`).
- legacy hash: sha256 of the 64 KiB at offset 1 MiB, first 8 hex digits (A1111's
  `sd_models.model_hash`, the "Model hash" of old infotexts).
- addnet hash: sha256 of a safetensors file's tensor payload after the header (what
  kohya's additional-networks and A1111's Lora extension use for LoRA files).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdstudio.config import atomic_write_bytes
from sdstudio.errors import ModelLoadError

_BLOCK = 1024 * 1024


def sha256_of_file(path: str | Path) -> str:
    """Full-file sha256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def legacy_model_hash(path: str | Path) -> str:
    """A1111's old 8-hex checkpoint hash: sha256 of 0x10000 bytes at offset 0x100000."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0x100000)
            return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]
    except OSError:
        return "NOFILE"


def addnet_hash_safetensors(path: str | Path) -> str:
    """sha256 of a safetensors file's data after its header (kohya/A1111 "addnet" hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        header_length = int.from_bytes(handle.read(8), "little")
        if size < 8 or header_length > size - 8:  # a seek that far fails (EINVAL) or hashes nothing
            raise ModelLoadError(
                f"{Path(path).name}: not a valid safetensors file (header claims {header_length} bytes, "
                f"the file has {size})"
            )
        handle.seek(header_length + 8)
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class FileHashes:
    """The hashes of one file at one (size, mtime)."""

    size: int
    mtime: float
    sha256: str
    legacy: str
    addnet: str | None = None

    @property
    def shorthash(self) -> str:
        return self.sha256[:10]


class HashCache:
    """Hashes by absolute path, valid while size and mtime are unchanged; stored as JSON.

    With `autosave=False` new hashes stay in memory until `save()`: a lookup made before a
    request is validated must not create files in the data dir if the request is refused.
    """

    def __init__(self, cache_file: Path, autosave: bool = True):
        self.cache_file = cache_file
        self.autosave = autosave
        self._lock = threading.Lock()
        # absolute path -> FileHashes as a dict (its JSON form)
        self._entries: dict[str, dict[str, Any]] | None = None
        self._unsaved = False

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.cache_file.read_text(encoding="utf-8"))
                if not isinstance(self._entries, dict):
                    self._entries = {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def cached(self, path: Path) -> FileHashes | None:
        """The cached hashes when the file has not changed since, else None."""
        stat = path.stat()
        with self._lock:
            entry = self._load().get(str(path.resolve()))
        if entry and entry.get("size") == stat.st_size and entry.get("mtime") == stat.st_mtime:
            return FileHashes(**entry)
        return None

    def hashes(self, path: Path) -> FileHashes:
        """The file's hashes, computed (and saved) only when not cached."""
        path = Path(path)
        found = self.cached(path)
        if found is not None:
            return found
        stat = path.stat()
        addnet = None
        if path.suffix == ".safetensors":
            try:
                addnet = addnet_hash_safetensors(path)
            except ModelLoadError:
                pass  # a broken header has no payload to hash; the file's own hashes still identify it
        result = FileHashes(stat.st_size, stat.st_mtime, sha256_of_file(path), legacy_model_hash(path), addnet)
        with self._lock:
            self._load()[str(path.resolve())] = asdict(result)
            self._unsaved = True
        if self.autosave:
            self.save()
        return result

    def save(self) -> None:
        """Write hashes computed since the last save to the cache file (nothing to write: no file touched)."""
        with self._lock:
            if not self._unsaved:
                return
            text = json.dumps(self._entries, indent=1, sort_keys=True)
            self._unsaved = False
        atomic_write_bytes(self.cache_file, text.encode("utf-8"))


def addnet_hash_safetensors_bytes(data: bytes) -> str:
    """The addnet hash of an in-memory safetensors file (e.g. `safetensors.torch.save(...)`), before it is written."""
    header_length = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_length :]).hexdigest()
