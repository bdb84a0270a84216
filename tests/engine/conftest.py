"""Fixtures for engine tests: a tiny random model and a service over a temp data dir."""

from __future__ import annotations

import pytest
from tiny_models import tiny_generation_model, tiny_unet, tiny_vae

from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.engine.service import GenerationService


@pytest.fixture(scope="session")
def tiny_components():
    return tiny_unet(seed=0), tiny_vae(seed=0), tiny_unet(seed=1, in_channels=9)


@pytest.fixture
def tiny_model(tiny_components):
    unet, vae, _ = tiny_components
    return tiny_generation_model(unet, vae, name="tiny", short_hash="0123456789")


@pytest.fixture
def tiny_inpainting_model(tiny_components):
    _, vae, unet9 = tiny_components
    return tiny_generation_model(unet9, vae, name="tiny-inpainting", short_hash="abcdef0123")


@pytest.fixture
def paths(tmp_path):
    return DataPaths(tmp_path / "data").ensure()


@pytest.fixture
def service(paths, tiny_model):
    return GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: tiny_model, version="test")
