"""Restricted loading of pickled model files (.ckpt, .pt, .pth, .bin).

A pickle can name any Python callable and have it run while loading. Model files only
need tensors, storages and plain containers, so this unpickler admits exactly those
(the same idea as A1111's `safe.RestrictedUnpickler`). Before anything is unpickled the
opcode stream is scanned, so a file that asks for anything else (`os.system`, `exec`,
`subprocess.Popen`, ...) is refused with an error naming that global and nothing in it
runs. Training-framework objects that some checkpoints carry (PyTorch Lightning
callbacks) are replaced by inert placeholders instead of being imported.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import IO, Any

import torch

from sdstudio.errors import ModelLoadError, UnsafeFileError

_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "bytearray"),
        ("__builtin__", "set"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch", "dtype"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("torch.nn.modules.container", "ParameterDict"),
        ("torch.serialization", "_get_layout"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)
_ALLOWED_MODULE_PREFIXES = ("torch",)  # torch.FloatStorage, torch.float16, torch.bfloat16 ...
_ALLOWED_TORCH_NAMES_SUFFIX = ("Storage",)
_PLACEHOLDER_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")


class _Placeholder:
    """Stands in for a training-framework object; keeps its state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _is_allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED_GLOBALS:
        return True
    if module == "torch" and (
        name.endswith(_ALLOWED_TORCH_NAMES_SUFFIX) or isinstance(getattr(torch, name, None), torch.dtype)
    ):
        return True
    return False


def _is_placeholder(module: str) -> bool:
    return module.startswith(_PLACEHOLDER_MODULE_PREFIXES)


def forbidden_globals(pickle_bytes: bytes) -> list[str]:
    """Globals a pickle stream would import that are not tensor data (scan only, nothing runs)."""
    found: list[str] = []
    strings: list[str] = []  # STACK_GLOBAL takes module and name from the two last pushed strings
    try:
        for opcode, arg, _ in pickletools.genops(pickle_bytes):
            if opcode.name in (
                "SHORT_BINUNICODE",
                "BINUNICODE",
                "UNICODE",
                "BINUNICODE8",
                "STRING",
                "BINSTRING",
                "SHORT_BINSTRING",
            ):
                strings.append(arg if isinstance(arg, str) else str(arg))
            elif opcode.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                if not _is_allowed(module, name) and not _is_placeholder(module):
                    found.append(f"{module}.{name}")
            elif opcode.name == "STACK_GLOBAL":
                if len(strings) < 2:
                    found.append("<computed global>")
                    continue
                module, name = strings[-2], strings[-1]
                if not _is_allowed(module, name) and not _is_placeholder(module):
                    found.append(f"{module}.{name}")
            elif opcode.name in ("REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"):
                pass
    except Exception as exc:  # a stream pickletools cannot walk is not loaded either
        raise UnsafeFileError(f"the pickle could not be checked ({exc})") from None
    return found


class _RestrictedUnpickler(pickle.Unpickler):
    """Second line of defence: refuses any global outside the allowlist while loading."""

    def find_class(self, module: str, name: str) -> Any:
        if _is_placeholder(module):
            return _Placeholder
        if not _is_allowed(module, name):
            raise UnsafeFileError(f"refused global {module}.{name}")
        return super().find_class(module, name)


class _RestrictedPickleModule:
    """What torch.load needs of a `pickle_module`."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickle byte streams inside a torch file (zip format: every data.pkl; legacy: the file)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.read(name) for name in archive.namelist() if name.endswith(".pkl")]
    return [path.read_bytes()]


def safe_load(path: str | Path) -> Any:
    """Load a pickled torch file admitting only tensors and plain data; UnsafeFileError otherwise."""
    path = Path(path)
    try:
        streams = _pickle_streams(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{path.name}: cannot be read ({exc})") from None
    for stream in streams:
        try:
            bad = forbidden_globals(stream)
        except UnsafeFileError as exc:
            if zipfile.is_zipfile(path):
                raise UnsafeFileError(f"{path.name}: refused: {exc}") from None
            # legacy torch files hold several pickles back to back; the restricted
            # unpickler below still guards them.
            break
        if bad:
            raise UnsafeFileError(
                f"{path.name}: refused to load: it asks for {bad[0]}, which is not tensor data "
                f"(a model file never needs it); nothing from the file was run"
            )
    try:
        return torch.load(path, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False)
    except UnsafeFileError as exc:
        raise UnsafeFileError(f"{path.name}: refused to load: {exc}; nothing from the file was run") from None
    except Exception as exc:
        raise ModelLoadError(f"{path.name}: not a readable model file ({type(exc).__name__}: {exc})") from None


def safe_load_bytes(data: bytes, name: str = "<bytes>") -> Any:
    """`safe_load` for in-memory data (e.g. an upload)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pt") as handle:
        handle.write(data)
        handle.flush()
        try:
            return safe_load(handle.name)
        except (UnsafeFileError, ModelLoadError) as exc:
            raise type(exc)(str(exc).replace(Path(handle.name).name, name)) from None


__all__ = ["safe_load", "safe_load_bytes", "forbidden_globals"]
_ = io  # keep io imported for type checkers of BytesIO callers
