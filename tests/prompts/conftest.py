"""Tiny random CLIP text encoders (tests/tiny_models.py, nothing downloaded) for conditioning tests."""

from __future__ import annotations

import pytest
from tiny_models import tiny_clip

# Fresh LayerNorms (weight 1, bias 0) make every row's mean exactly 0, unlike trained CLIP: perturb them.
LAYER_NORM_NOISE = 0.1


@pytest.fixture(scope="session")
def clip_l():
    return tiny_clip(seed=1, hidden=32, layers=3, layer_norm_noise=LAYER_NORM_NOISE)


@pytest.fixture(scope="session")
def clip_g():
    return tiny_clip(seed=2, hidden=48, layers=3, projection=24, layer_norm_noise=LAYER_NORM_NOISE)
