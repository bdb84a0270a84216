"""A watcher on the file system: every file the process opens, lists, writes or removes, via audit hooks.

`sys.addaudithook` hooks cannot be removed, so a process gets one hook (see the session
fixture in conftest.py) that forwards to whichever `Watch` is active and costs one attribute
read otherwise. Audit events come from Python code (`open`, `io.open_code`, `os.*`,
`shutil.*`, `tempfile.*`, `subprocess.Popen`); a C or Rust library opening a file itself
(safetensors' mmap, libtorch) raises none, so this sees what Python code does with paths,
which is where a request's values reach the file system.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Audit event -> (positions of its path arguments, position of its dir_fd argument or None).
PATH_EVENTS: dict[str, tuple[tuple[int, ...], int | None]] = {
    "open": ((0,), None),
    "os.listdir": ((0,), None),
    "os.scandir": ((0,), None),
    "os.mkdir": ((0,), 2),
    "os.rmdir": ((0,), 1),
    "os.remove": ((0,), 1),
    "os.rename": ((0, 1), 2),
    "os.link": ((0, 1), 2),
    "os.symlink": ((0, 1), 2),
    "os.truncate": ((0,), None),
    "os.chmod": ((0,), 2),
    "os.chown": ((0,), 3),
    "os.utime": ((0,), 3),
    "os.chdir": ((0,), None),
    "shutil.copyfile": ((0, 1), None),
    "shutil.copymode": ((0, 1), None),
    "shutil.copystat": ((0, 1), None),
    "shutil.copytree": ((0, 1), None),
    "shutil.move": ((0, 1), None),
    "shutil.rmtree": ((0,), 1),
    "shutil.chown": ((0,), None),
    "shutil.make_archive": ((0, 2), None),
    "shutil.unpack_archive": ((0, 1), None),
    "glob.glob": ((0,), None),
    "tempfile.mkstemp": ((0,), None),
    "tempfile.mkdtemp": ((0,), None),
    "sqlite3.connect": ((0,), None),
}

PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.fork"})
"""Starting a program is recorded whatever its path: no request should."""

MOST_RECORDS = 5000


@dataclass(frozen=True)
class Access:
    """One file-system event outside the allowed roots and the request that was in flight."""

    cause: str
    event: str
    path: str


@dataclass
class Watch:
    """Which paths are allowed, what was seen outside them, and the request now in flight."""

    roots: tuple[str, ...]
    files: frozenset[str]
    cause: str = "(between requests)"
    accesses: list[Access] = field(default_factory=list)
    hook_errors: list[str] = field(default_factory=list)

    def allowed(self, path: str) -> bool:
        return path in self.files or any(path == root or path.startswith(root + os.sep) for root in self.roots)

    def observe(self, event: str, args: tuple) -> None:
        if event in PROCESS_EVENTS:
            self.record(event, repr(args)[:300])
            return
        positions, dir_fd_at = PATH_EVENTS[event]
        dir_fd = args[dir_fd_at] if dir_fd_at is not None and dir_fd_at < len(args) else None
        for position in positions:
            if position >= len(args) or args[position] is None:
                continue
            path = resolved(args[position], dir_fd)
            if path is None or self.allowed(path) or by_import_system():
                continue
            mode = args[1] if event == "open" and isinstance(args[1], str) else ""
            self.record(f"{event}({mode})" if mode else event, path)

    def record(self, event: str, path: str) -> None:
        if len(self.accesses) < MOST_RECORDS:
            self.accesses.append(Access(self.cause, event, path))


def resolved(path: object, dir_fd: object) -> str | None:
    """The absolute, symlink-free path an event argument names; None for pipes, sockets and non-paths."""
    if isinstance(path, int):  # a descriptor: whatever it was opened on
        try:
            target = os.readlink(f"/proc/self/fd/{path}")
        except OSError:
            return None
        return target if target.startswith("/") else None
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return None
    base = os.getcwd()
    if isinstance(dir_fd, int) and not os.path.isabs(path):
        base = resolved(dir_fd, None) or base
    return os.path.realpath(os.path.join(base, path))  # "~" is a folder name to open(), as to the OS


def by_import_system() -> bool:
    """Whether the event comes from the import machinery (lazy imports read sys.path, not request data)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class FileSystemWatcher:
    """Forwards the process's audit events to the active `Watch`, if any."""

    def __init__(self) -> None:
        self._watch: Watch | None = None

    def hook(self, event: str, args: tuple) -> None:
        watch = self._watch
        if watch is None or (event not in PATH_EVENTS and event not in PROCESS_EVENTS):
            return
        try:
            watch.observe(event, args)
        except Exception as error:  # an exception here would reach the code that opened the file
            watch.hook_errors.append(f"{event} {args!r:.200}: {error!r}")

    @contextmanager
    def watching(self, roots: Iterable[str | Path], files: Iterable[str | Path] = ()) -> Iterator[Watch]:
        """Record accesses outside `roots` (folders) and `files` until the block ends."""
        resolved_roots = {os.path.realpath(root) for root in roots} | {os.path.abspath(root) for root in roots}
        resolved_files = {os.path.realpath(f) for f in files} | {os.path.abspath(f) for f in files}
        watch = Watch(tuple(sorted(resolved_roots)), frozenset(resolved_files))
        self._watch = watch
        try:
            yield watch
        finally:
            self._watch = None
