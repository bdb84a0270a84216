"""Tiny random-weight components in each SD layout, built on the fly (no files, no hub)."""

from __future__ import annotations

import torch


def tiny_clip(hidden=64, layers=2, heads=2, act="quick_gelu", projection=None, seed=0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=hidden * 2,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                            hidden_act=act, projection_dim=projection or hidden,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407 if act == "quick_gelu" else 0)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    return model.eval()


def tiny_unet(in_channels=4, context=64, linear=False, addition=None, head_dim=2, seed=0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    kwargs = {}
    if addition:
        kwargs = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=addition)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=context, attention_head_dim=head_dim, norm_num_groups=32, use_linear_projection=linear,
        **kwargs,
    )
    return unet.eval()


def tiny_vae(seed=0, levels=2):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=(32, 32)[:levels],
                        layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=32)
    return vae.eval()


def randomize(module, seed=1):
    """Non-zero random weights everywhere (diffusers zero-initialises some output layers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return module
