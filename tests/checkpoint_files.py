"""Tiny random checkpoints written to disk through the real LDM saver (shared by several test folders)."""

from __future__ import annotations


def write_tiny_checkpoint(folder, name: str = "random-tiny.safetensors", seed: int = 0):
    """A tiny random SD1-layout checkpoint (+ LDM yaml) written through the real saver."""
    from pathlib import Path

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdstudio.models.saver import ldm_yaml_for, save_checkpoint

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=2,
    )
    vae = AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=1, max_position_embeddings=77))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(folder / name, unet=unet, vae=vae, text_encoder=text_encoder,
                           yaml_text=ldm_yaml_for(unet.config, vae.config, scale_factor=0.5))
