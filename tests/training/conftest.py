"""Fixtures of the training tests: a micro SD1-layout model and a small kohya-style dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdstudio.training.lora_training import TrainingBase


@pytest.fixture(scope="module")
def base():
    from sdstudio.training.tiny_model import SCHEDULER_CONFIG, build_components, micro_ldm_config

    parts = build_components(micro_ldm_config(), seed=0)
    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.eval().requires_grad_(False)
    return TrainingBase(
        parts.unet, parts.vae, parts.text_encoder, dict(SCHEDULER_CONFIG), parts.scale_factor, name="micro"
    )


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "data"
    concept = folder / "3_star"
    concept.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(concept / f"{i}.png")
        (concept / f"{i}.txt").write_text("a red star, on a blue background")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "plain.png")  # no caption
    return folder
