"""Installing, enabling, disabling and removing extensions (A1111's Extensions tab, as functions).

Extensions live in `DATA_DIR/extensions/NAME/`. `install` copies a local folder or clones a
git repository the machine can reach (a local path or a `file://` URL works offline);
enable/disable is A1111's `disabled_extensions` option, saved in config.json, so it
survives a restart. Each change reloads the script host so it takes effect at once.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sdstudio.config import SettingsStore
from sdstudio.errors import InvalidRequest, NotFound, SdStudioError
from sdstudio.extensions.scripts.host import ExtensionStatus, ScriptHost

GIT_TIMEOUT_S = 300
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class ExtensionManager:
    """The extensions of one data dir: list, install, enable, disable, remove."""

    host: ScriptHost
    settings: SettingsStore

    @property
    def folder(self) -> Path:
        return self.host.extensions_dir

    def list(self) -> list[ExtensionStatus]:
        """The installed extensions (built-in scripts left out), with their state and problems."""
        return [status for status in self.host.statuses if not status.builtin and status.path.parent == self.folder]

    def install(self, source: str, name: str | None = None) -> ExtensionStatus:
        """Install from a local folder (copied) or a git repository (cloned); returns its status after loading."""
        source = source.strip()
        local = Path(source).expanduser()
        name = self._check_name(name or _name_from_source(source))
        target = self.folder / name
        if target.exists():
            raise InvalidRequest("name", f"an extension named {name!r} is already installed ({target})")
        self.folder.mkdir(parents=True, exist_ok=True)
        if local.is_dir() and not (local / ".git").exists():
            shutil.copytree(local, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif local.is_dir() or _is_git_url(source):  # a checkout is cloned, so it keeps its remote and commit
            self._clone(source, target)
        else:
            raise NotFound(f"source: {source!r} is neither a folder nor a git repository")
        self.host.load()
        return self._status(name)

    def _clone(self, source: str, target: Path) -> None:
        git = shutil.which("git")
        if git is None:
            raise SdStudioError("source: installing from a git repository needs git, which is not installed")
        try:
            done = subprocess.run(
                [git, "clone", "--depth", "1", "--", source, str(target)],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(target, ignore_errors=True)
            raise SdStudioError(f"source: git clone of {source!r} took longer than {GIT_TIMEOUT_S} s") from None
        if done.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise SdStudioError(f"source: git clone of {source!r} failed: {lines[-1] if lines else done.returncode}")

    def enable(self, name: str) -> ExtensionStatus:
        """Enable an installed extension (saved: it stays enabled after a restart)."""
        return self._set_enabled(name, True)

    def disable(self, name: str) -> ExtensionStatus:
        """Disable an installed extension (saved): its scripts and callbacks are unloaded."""
        return self._set_enabled(name, False)

    def _set_enabled(self, name: str, enabled: bool) -> ExtensionStatus:
        self._installed(name)
        disabled = [n for n in self.settings.current.disabled_extensions if n != name]
        if not enabled:
            disabled.append(name)
        self.settings.change({"disabled_extensions": disabled})
        self.host.load()
        return self._status(name)

    def remove(self, name: str) -> None:
        """Delete an installed extension's folder (and forget that it was disabled)."""
        target = self._installed(name)
        shutil.rmtree(target)
        if name in self.settings.current.disabled_extensions:
            self.settings.change(
                {"disabled_extensions": [n for n in self.settings.current.disabled_extensions if n != name]}
            )
        self.host.load()

    def _installed(self, name: str) -> Path:
        target = self.folder / self._check_name(name)
        if not target.is_dir():
            installed = ", ".join(p.name for p in self.host.extension_folders()) or "none"
            raise NotFound(f"extension {name!r} is not installed; installed: {installed}")
        return target

    def _status(self, name: str) -> ExtensionStatus:
        for status in self.host.statuses:
            if status.name == name and status.path.parent == self.folder:
                return status
        raise NotFound(f"extension {name!r} is not installed")

    @staticmethod
    def _check_name(name: str) -> str:
        """An extension name is one plain folder name (no path, nothing hidden)."""
        if not _NAME.match(name or "") or name in (".", ".."):
            raise InvalidRequest("name", f"{name!r} is not a usable extension name (letters, digits, . _ -)")
        return name


def _is_git_url(source: str) -> bool:
    parsed = urlparse(source)
    return (
        parsed.scheme in ("file", "http", "https", "ssh", "git")
        or source.endswith(".git")
        or "@" in source.split("/")[0]
    )


def _name_from_source(source: str) -> str:
    """The folder name an extension gets: the last path part without `.git` (as git clone names it)."""
    last = source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return last.removesuffix(".git")
