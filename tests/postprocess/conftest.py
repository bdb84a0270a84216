"""Fixtures for the postprocess tests; the network builders live in postprocess_networks.py."""

from __future__ import annotations

import pytest

from sdstudio.config import DataPaths, Settings, SettingsStore


@pytest.fixture
def paths(data_dir) -> DataPaths:
    """The A1111 folder layout under the test's data dir."""
    return DataPaths(data_dir).ensure()


@pytest.fixture
def settings_store(paths) -> SettingsStore:
    """Settings with small upscaler tiles, so the tests exercise tiling."""
    return SettingsStore(paths, Settings(ESRGAN_tile=48, ESRGAN_tile_overlap=8))
