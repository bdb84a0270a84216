"""A tiny random generation model built on the fly (no files, no hub) for UI tests."""

from __future__ import annotations

import hashlib

SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


class HashTextEncoder:
    """Stands in for CLIP: each prompt maps to its own fixed random tensor."""

    def __init__(self, dim: int = 32, tokens: int = 77):
        self.dim, self.tokens = dim, tokens

    def embed(self, text: str):
        import torch

        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return torch.randn(self.tokens, self.dim, generator=torch.Generator().manual_seed(seed))

    def encode(self, prompts, negative_prompts, steps, clip_skip, width, height):
        import torch

        from sdstudio.engine.sampling import FixedConditioning

        return FixedConditioning(torch.stack([self.embed(p) for p in prompts]), torch.stack([self.embed(n) for n in negative_prompts]))


def tiny_generation_model(name: str = "tiny-random"):
    """A GenerationModel with a 2-level UNet and a 4-level VAE, random weights, seed 0."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sdstudio.engine.job_context import GenerationModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    ).eval().requires_grad_(False)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=64,
    ).eval().requires_grad_(False)
    return GenerationModel(unet=unet, vae=vae, encoder=HashTextEncoder(), scheduler_config=dict(SCHEDULER_CONFIG),
                           name=name, short_hash="0123456789")
