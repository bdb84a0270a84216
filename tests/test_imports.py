"""Every module imports cleanly, and importing does no work (no folders, no threads)."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import subprocess
import sys

import sdstudio

OPTIONAL_EXTRAS = {"sdstudio.server.cluster": "ray"}
"""Modules of an optional extra (pyproject's `cluster`) and the package they need: left out where it is missing."""


def all_module_names() -> list[str]:
    names = ["sdstudio"]
    for info in pkgutil.walk_packages(sdstudio.__path__, prefix="sdstudio."):
        needs = OPTIONAL_EXTRAS.get(info.name)
        if needs is None or importlib.util.find_spec(needs) is not None:
            names.append(info.name)
    return sorted(names)


def test_every_module_imports():
    assert len(all_module_names()) > 10
    for name in all_module_names():
        importlib.import_module(name)


def test_import_has_no_side_effects(tmp_path):
    """Importing every module creates no files and starts no threads."""
    data = tmp_path / "data"
    code = (
        "import importlib, importlib.util, pkgutil, threading, sdstudio\n"
        "before = threading.active_count()\n"
        f"optional = {OPTIONAL_EXTRAS!r}\n"
        "for info in pkgutil.walk_packages(sdstudio.__path__, prefix='sdstudio.'):\n"
        "    needs = optional.get(info.name)\n"
        "    if needs is None or importlib.util.find_spec(needs) is not None:\n"
        "        importlib.import_module(info.name)\n"
        "assert threading.active_count() == before, threading.enumerate()\n"
    )
    env = {
        "SDSTUDIO_DATA_DIR": str(data),
        "HOME": str(tmp_path / "home"),
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    assert not data.exists()
    assert not (tmp_path / "home" / ".local" / "share" / "sdstudio").exists()
