"""Fixtures for engine tests: a tiny random model and a service over a temp data dir."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import SCHEDULER_CONFIG, tiny_unet, tiny_vae  # noqa: E402

from sdstudio.config import SettingsStore, DataPaths, Settings  # noqa: E402
from sdstudio.engine.job_context import GenerationModel  # noqa: E402
from sdstudio.engine.sampling import FixedConditioning  # noqa: E402
from sdstudio.engine.service import GenerationService  # noqa: E402


class HashTextEncoder:
    """Deterministic stand-in for a text encoder: each prompt maps to its own random tensor."""

    def __init__(self, dim: int = 32, tokens: int = 77):
        self.dim, self.tokens = dim, tokens
        self.calls: list[tuple[list[str], list[str], int]] = []

    def embed(self, text: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return torch.randn(self.tokens, self.dim, generator=torch.Generator().manual_seed(seed))

    def encode(self, prompts, negative_prompts, steps, clip_skip, width, height):
        self.calls.append((list(prompts), list(negative_prompts), steps))
        cond = torch.stack([self.embed(p) for p in prompts])
        uncond = torch.stack([self.embed(n) for n in negative_prompts])
        return FixedConditioning(cond, uncond)


@pytest.fixture(scope="session")
def tiny_components():
    return tiny_unet(), tiny_vae(), tiny_unet(in_channels=9, seed=1)


@pytest.fixture
def tiny_model(tiny_components):
    unet, vae, _ = tiny_components
    return GenerationModel(unet=unet, vae=vae, encoder=HashTextEncoder(), scheduler_config=dict(SCHEDULER_CONFIG), name="tiny", short_hash="0123456789")


@pytest.fixture
def tiny_inpainting_model(tiny_components):
    _, vae, unet9 = tiny_components
    return GenerationModel(unet=unet9, vae=vae, encoder=HashTextEncoder(), scheduler_config=dict(SCHEDULER_CONFIG), name="tiny-inpainting", short_hash="abcdef0123")


@pytest.fixture
def paths(tmp_path):
    return DataPaths(tmp_path / "data").ensure()


@pytest.fixture
def service(paths, tiny_model):
    return GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: tiny_model, version="test")
