"""Tiny random CLIP text encoders (built on the fly, nothing downloaded) for conditioning tests."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection


def tiny_clip(hidden: int = 32, layers: int = 3, projection: int | None = None, seed: int = 0):
    """A random CLIP text encoder with the real vocabulary and 77 positions, in eval mode."""
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=projection or hidden,
        bos_token_id=49406, eos_token_id=49407,
    )
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    # Fresh LayerNorms (weight 1, bias 0) make every row's mean exactly 0, unlike trained CLIP.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.add_(0.1 * torch.randn_like(module.weight))
                module.bias.add_(0.1 * torch.randn_like(module.bias))
    return model.eval()


@pytest.fixture(scope="session")
def clip_l():
    return tiny_clip(hidden=32, layers=3, seed=1)


@pytest.fixture(scope="session")
def clip_g():
    return tiny_clip(hidden=48, layers=3, projection=24, seed=2)
