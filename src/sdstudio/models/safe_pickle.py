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
# torch's legacy format: magic number, protocol, system info, the data, storage keys; then raw bytes.
LEGACY_PICKLES = 5
REFUSED = "refused as unsafe"


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
    return _forbidden_in(io.BytesIO(pickle_bytes))


_STRING_OPCODES = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def _memo_index(arg: Any) -> int:
    if not isinstance(arg, int):
        raise ValueError(f"memo index {arg!r} is not a number")
    return arg


def _forbidden_in(stream: IO[bytes]) -> list[str]:
    """`forbidden_globals` of the pickle at the stream's position; leaves the stream just past its STOP.

    The unpickler's stack and memo are followed as `pickletools.dis` follows them (strings kept,
    other values as placeholders), so STACK_GLOBAL is judged by the module and name it will
    really take, also when they come from the memo; one it cannot know is refused.
    """
    found: list[str] = []
    stack: list[object] = []
    memo: dict[int, object] = {}

    def check(module: object, name: object) -> None:
        if not isinstance(module, str) or not isinstance(name, str):
            found.append("<computed global>")
        elif not _is_allowed(module, name) and not _is_placeholder(module):
            found.append(f"{module}.{name}")

    try:
        for opcode, arg, _ in pickletools.genops(stream):
            before, after = opcode.stack_before, list[object](opcode.stack_after)
            pops = len(before)
            if pickletools.markobject in before or (
                opcode.name == "POP" and stack and stack[-1] is pickletools.markobject
            ):
                mark = max(i for i, item in enumerate(stack) if item is pickletools.markobject)
                del stack[mark:]
                pops = before.index(pickletools.markobject) if pickletools.markobject in before else 0
            if opcode.name in _MEMO_PUTS:
                memo[len(memo) if opcode.name == "MEMOIZE" else _memo_index(arg)] = stack[-1]
                continue  # the stored value stays on the stack as it is
            if opcode.name in _MEMO_GETS:
                after = [memo[_memo_index(arg)]]
            elif opcode.name in _STRING_OPCODES:
                after = [str(arg)]
            elif opcode.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                check(module, name)
            elif opcode.name == "STACK_GLOBAL":
                check(stack[-2], stack[-1])
            if pops > len(stack):
                raise ValueError(f"{opcode.name} pops {pops} items from a stack of {len(stack)}")
            if pops:
                del stack[-pops:]
            stack.extend(after)
    except Exception as exc:  # a stream pickletools cannot walk is not loaded either
        raise UnsafeFileError(f"the pickle could not be checked ({exc})") from None
    return found


class _RestrictedUnpickler(pickle.Unpickler):
    """Second line of defence: refuses any global outside the allowlist while loading."""

    def find_class(self, module: str, name: str) -> Any:
        if _is_placeholder(module):
            return _Placeholder
        if not _is_allowed(module, name):
            raise UnsafeFileError(_asks_for(f"{module}.{name}"))
        return super().find_class(module, name)


class _RestrictedPickleModule:
    """What torch.load needs of a `pickle_module`."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _asks_for(name: str) -> str:
    return f"it asks for {name}, which is not tensor data (a model file never needs it)"


def _refused(path: Path, why: object) -> UnsafeFileError:
    """The one message every refusal gives: the file, that it was refused as unsafe, why, nothing ran."""
    return UnsafeFileError(f"{path.name}: {REFUSED}: {why}; nothing from the file was run")


def check_pickle_file(path: str | Path) -> None:
    """Refuse (UnsafeFileError) a torch file whose pickles ask for anything but tensor data; nothing is unpickled.

    Zip files: every `.pkl` member. Legacy torch files hold their pickles back to back
    (magic number, protocol, system info, the data, storage keys) before the raw storage
    bytes, and a plain pickle is one pickle: each is scanned in turn until the bytes stop
    being a pickle; the restricted unpickler guards whatever a scan cannot walk.
    ModelLoadError when the file cannot be read.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                streams = [archive.read(name) for name in archive.namelist() if name.endswith(".pkl")]
            for stream in streams:
                try:
                    bad = forbidden_globals(stream)
                except UnsafeFileError as exc:
                    raise _refused(path, exc) from None
                if bad:
                    raise _refused(path, _asks_for(bad[0]))
            return
        with open(path, "rb") as handle:
            for _ in range(LEGACY_PICKLES):
                if not handle.peek(1):
                    return
                try:
                    bad = _forbidden_in(handle)
                except UnsafeFileError:
                    return  # not (or no longer) a pickle: the restricted unpickler decides
                if bad:
                    raise _refused(path, _asks_for(bad[0]))
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{path.name}: cannot be read ({exc})") from None


def safe_load(path: str | Path) -> Any:
    """Load a pickled torch file admitting only tensors and plain data; UnsafeFileError otherwise."""
    path = Path(path)
    check_pickle_file(path)
    try:
        return torch.load(path, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False)
    except UnsafeFileError as exc:
        raise _refused(path, exc) from None
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


__all__ = ["safe_load", "safe_load_bytes", "forbidden_globals", "check_pickle_file", "REFUSED"]
