"""Shared fixtures: every test gets its own temporary data dir; nothing reaches a hub."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh data dir, also exported as SDSTUDIO_DATA_DIR for subprocesses."""
    root = tmp_path / "data"
    monkeypatch.setenv("SDSTUDIO_DATA_DIR", str(root))
    return root
