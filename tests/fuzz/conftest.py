"""Fixtures of the fuzz suite: the process's file-system watcher, and the server under fuzz."""

from __future__ import annotations

import sys

import pytest
from server.conftest import start_server
from tiny_models import write_tiny_blip, write_tiny_clip_model

from sdstudio.app import open_app

from .watcher import FileSystemWatcher


@pytest.fixture(scope="session")
def file_watcher():
    """The one audit hook of this test process (hooks cannot be removed); it records only inside `watching`."""
    watcher = FileSystemWatcher()
    sys.addaudithook(watcher.hook)
    return watcher


@pytest.fixture
def fuzz_server(tmp_path):
    """A real server over a fresh data dir: the bundled model, and a tiny BLIP and CLIP for interrogate."""
    root = tmp_path / "data"
    write_tiny_blip(root / "models" / "BLIP" / "blip-tiny")
    write_tiny_clip_model(root / "models" / "CLIP" / "clip-tiny")
    running = start_server(open_app(root))
    yield running
    running.stop()
