"""Shared fixtures: every test gets its own temporary data dir; nothing reaches a hub."""

from __future__ import annotations

import os

import pytest
from tiny_models import write_tiny_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh data dir, also exported as SDSTUDIO_DATA_DIR for subprocesses."""
    root = tmp_path / "data"
    monkeypatch.setenv("SDSTUDIO_DATA_DIR", str(root))
    return root


@pytest.fixture
def data_dir_with_model(data_dir):
    """A data dir whose models/Stable-diffusion holds one tiny random checkpoint."""
    write_tiny_checkpoint(data_dir / "models" / "Stable-diffusion")
    return data_dir
