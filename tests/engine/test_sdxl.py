"""An SDXL-shaped tiny model (two text encoders, pooled + time-id conditioning) runs end to end."""

from __future__ import annotations

import pytest
import torch
from tiny import SCHEDULER_CONFIG

from sdstudio.config import SettingsStore, Settings
from sdstudio.engine.job_context import GenerationModel
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.engine.service import GenerationService


@pytest.fixture(scope="module")
def sdxl_model(tiny_components):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdstudio.prompts.conditioning import PromptConditioner, PromptEncoder

    torch.manual_seed(0)
    common = dict(vocab_size=49408, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77)
    clip_l = CLIPTextModel(CLIPTextConfig(hidden_size=16, **common)).eval()
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, projection_dim=32, **common)).eval()
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=48, attention_head_dim=8, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8,
    ).eval()
    encoder = PromptConditioner(PromptEncoder([clip_l, clip_g], architecture="sdxl"))
    return GenerationModel(unet=unet, vae=tiny_components[1], encoder=encoder, scheduler_config=dict(SCHEDULER_CONFIG), family="sdxl")


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM"])
def test_sdxl_txt2img_with_and_prompt_and_hires(paths, sdxl_model, sampler):
    service = GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: sdxl_model)
    request = Txt2ImgRequest(prompt="a cat AND a dog", negative_prompt="blur", seed=3, sampler_name=sampler, batch_size=2, width=64, height=64, steps=2,
                             enable_hr=True, hr_second_pass_steps=1, denoising_strength=0.5, do_not_save_grid=True)
    first = service.txt2img(request)
    again = service.txt2img(request)
    assert [im.size for im in first.images] == [(128, 128), (128, 128)]
    assert list(first.images[0].getdata()) == list(again.images[0].getdata())
