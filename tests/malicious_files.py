"""Malicious pickled model files: unpickling any of them would create a marker file.

Every form sdstudio must refuse: torch.save's zip format, torch's legacy format, a plain
pickle, and one no opcode scan can walk (its module and name come from the memo and an
unknown opcode follows the call), which only the restricted unpickler can stop.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

FORMS = ("zip", "legacy", "raw", "unscannable")


class Payload:
    """Unpickling this would create `target` (the attack a malicious .ckpt carries)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _short_string(text: bytes) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text  # SHORT_BINUNICODE


def unscannable_pickle(target: Path) -> bytes:
    """os.system(touch target) with the global's names fetched from the memo and an invalid opcode after the call."""
    module = b"posix" if os.name == "posix" else b"nt"
    return (
        b"\x80\x04"  # PROTO 4
        + _short_string(module)
        + b"\x94"  # MEMOIZE 0
        + _short_string(b"system")
        + b"\x94"  # MEMOIZE 1
        + b"00"  # POP POP
        + _short_string(b"torch")
        + _short_string(b"Size")
        + b"00"  # POP POP: the last strings pushed read "torch", "Size"
        + b"h\x00h\x01"  # BINGET 0, BINGET 1
        + b"\x93"  # STACK_GLOBAL: posix.system
        + _short_string(f"touch {target}".encode())
        + b"\x85R"  # TUPLE1 REDUCE
        + b"\xff."  # no such opcode: a scan cannot walk past it; STOP
    )


def write_malicious(path: Path, target: Path, form: str) -> Path:
    """A malicious model file in `form` (one of FORMS) at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"state_dict": {"w": torch.zeros(1)}, "x": Payload(target)}
    if form == "zip":
        torch.save(data, path)
    elif form == "legacy":
        torch.save(data, path, _use_new_zipfile_serialization=False)
    elif form == "raw":
        path.write_bytes(pickle.dumps(Payload(target)))
    elif form == "unscannable":
        path.write_bytes(unscannable_pickle(target))
    else:
        raise ValueError(f"unknown form {form!r}; one of {FORMS}")
    return path
