"""An SDXL-shaped tiny model (two text encoders, pooled + time-id conditioning) runs end to end."""

from __future__ import annotations

import pytest
from tiny_models import sdxl_added_conditioning, tiny_clip, tiny_generation_model, tiny_unet

from sdstudio.config import Settings, SettingsStore
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.engine.service import GenerationService
from sdstudio.prompts.conditioning import PromptConditioner, PromptEncoder


@pytest.fixture(scope="module")
def sdxl_model(tiny_components):
    clip_l = tiny_clip(seed=0, hidden=16)
    clip_g = tiny_clip(seed=1, hidden=32, projection=32)
    # context = clip_l + clip_g hidden states side by side; added conditioning = clip_g's pooled projection
    unet = tiny_unet(seed=2, cross_attention_dim=16 + 32, **sdxl_added_conditioning(32))
    encoder = PromptConditioner(PromptEncoder([clip_l, clip_g], architecture="sdxl"))
    return tiny_generation_model(unet, tiny_components[1], encoder=encoder, family="sdxl")


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM"])
def test_sdxl_txt2img_with_and_prompt_and_hires(paths, sdxl_model, sampler):
    service = GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: sdxl_model)
    request = Txt2ImgRequest(
        prompt="a cat AND a dog",
        negative_prompt="blur",
        seed=3,
        sampler_name=sampler,
        batch_size=2,
        width=64,
        height=64,
        steps=2,
        enable_hr=True,
        hr_second_pass_steps=1,
        denoising_strength=0.5,
        do_not_save_grid=True,
    )
    first = service.txt2img(request)
    again = service.txt2img(request)
    assert [im.size for im in first.images] == [(128, 128), (128, 128)]
    assert list(first.images[0].getdata()) == list(again.images[0].getdata())
