"""The tensors of a TorchScript archive (OpenAI CLIP's `ViT-L-14.pt`), read without running anything.

`torch.jit.load` compiles and runs the TorchScript source the archive carries in `code/`,
and `torch.load` hands such archives to `torch.jit.load`; neither is used. A TorchScript
archive is a zip whose `<name>/data.pkl` pickles the module tree: every scripted module is a
`__torch__.<...>` class built with NEWOBJ and given a dict of its attributes (submodules,
parameters, buffers, plain values) with BUILD, and every tensor is
`torch._utils._rebuild_tensor_v2` over a persistent id naming an entry of `<name>/data/`.

So `data.pkl` is read by a restricted unpickler: `__torch__.*` classes become inert
`ScriptObject` records that only keep their attribute dict, tensors are rebuilt by this
module's own functions from the raw bytes of the `data/` entries (`torch.frombuffer` +
`as_strided`, bounds checked by torch), a few plain containers are admitted, and any other
global is refused with UnsafeFileError before it is imported. `code/` and `constants.pkl`
are never read. The state dict is every tensor reached from the root record, named by its
attribute path ("visual.conv1.weight"), as the module's `state_dict()` would name it (plain
tensor attributes, such as a cached attention mask, come along; callers take what they need).
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import torch

from sdstudio.errors import ModelLoadError, UnsafeFileError
from sdstudio.models.safe_pickle import _asks_for, _refused

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_TYPED_LISTS = frozenset({"build_intlist", "build_floatlist", "build_doublelist", "build_boollist", "build_tensorlist"})
MAX_MODULE_DEPTH = 64


class ScriptObject:
    """A scripted module (or other `__torch__` object) as data: its attribute dict, nothing callable."""

    attributes: dict[str, Any]

    def __new__(cls, *args: object) -> ScriptObject:  # NEWOBJ calls __new__ only
        record = super().__new__(cls)
        record.attributes = {}
        return record

    def __setstate__(self, state: object) -> None:
        self.attributes = dict(state) if isinstance(state, dict) else {}


class _StorageDtype:
    """What a `torch.<Type>Storage` global stands for in a persistent id: only its dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object, *_: object) -> torch.Tensor:
    """`_rebuild_tensor_v2`'s result, built here: a strided view of the flat storage tensor."""
    if not isinstance(storage, torch.Tensor) or not isinstance(offset, int):
        raise ValueError("a tensor record without its storage")
    if not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise ValueError("a tensor record without its size and stride")
    return storage.as_strided(tuple(int(n) for n in size), tuple(int(n) for n in stride), offset)


def _rebuild_parameter(data: object, *_: object) -> object:
    return data


def _typed_list(items: object) -> list[Any]:
    return list(items) if isinstance(items, list) else []


def _restore_type_tag(value: object, _type: object) -> object:
    return value


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl` admitting only inert records, tensor data and plain containers."""

    def __init__(self, stream: IO[bytes], archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(stream)
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (ScriptObject,), {})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageDtype(_STORAGE_DTYPES[name])
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name in _TYPED_LISTS:
            return _typed_list
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return _restore_type_tag
        raise UnsafeFileError(_asks_for(f"{module}.{name}"))

    def persistent_load(self, pid: Any) -> torch.Tensor:
        """The flat tensor of one `data/<key>` entry, named by ("storage", Type, key, location, numel)."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"unknown persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageDtype) or not isinstance(key, str) or not isinstance(numel, int):
            raise ValueError(f"malformed storage record {pid!r:.80}")
        if key not in self._storages:
            data = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
            itemsize = torch.empty((), dtype=storage_type.dtype).element_size()
            if len(data) < numel * itemsize:
                raise ValueError(f"storage {key} holds {len(data)} bytes, fewer than its {numel} elements need")
            flat = (
                torch.frombuffer(data, dtype=storage_type.dtype) if data else torch.empty(0, dtype=storage_type.dtype)
            )
            self._storages[key] = flat
        return self._storages[key]


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether `path` is a TorchScript zip (it has `code/` or `constants.pkl` next to `data.pkl`)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except OSError:
        return False
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the scripted module in `path`, by attribute path; nothing in the archive runs."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
            if not pickles:
                raise ModelLoadError(f"{path.name}: not a TorchScript archive (no data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder").strip() != b"little":
                raise ModelLoadError(f"{path.name}: big-endian tensors are not supported")
            with archive.open(pickles[0]) as stream:
                root = _ArchiveUnpickler(stream, archive, prefix).load()
    except UnsafeFileError as exc:
        raise _refused(path, exc) from None
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{path.name}: not a readable TorchScript archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(root, ScriptObject):
        raise ModelLoadError(f"{path.name}: the archive does not hold a scripted module")
    tensors: dict[str, torch.Tensor] = {}
    _collect(root, "", tensors, set(), 0)
    return tensors


def _collect(record: ScriptObject, prefix: str, tensors: dict[str, torch.Tensor], seen: set[int], depth: int) -> None:
    """Add the tensors under `record` to `tensors` as `prefix + attribute path`."""
    if id(record) in seen or depth > MAX_MODULE_DEPTH:
        return
    seen.add(id(record))
    for name, value in record.attributes.items():
        if isinstance(value, torch.Tensor):
            tensors[f"{prefix}{name}"] = value
        elif isinstance(value, ScriptObject):
            _collect(value, f"{prefix}{name}.", tensors, seen, depth + 1)


__all__ = ["ScriptObject", "is_torchscript_archive", "read_torchscript_tensors"]
