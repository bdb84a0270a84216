"""The engine with the prompt layer's A1111 encoder: schedules switch at the right step, AND runs."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_clip, tiny_generation_model

from sdstudio.config import Settings, SettingsStore
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.engine.service import GenerationControl, GenerationService
from sdstudio.errors import InvalidRequest
from sdstudio.prompts.conditioning import PromptConditioner, PromptEncoder


@pytest.fixture
def prompt_model(tiny_components):
    unet, vae, _ = tiny_components
    return tiny_generation_model(unet, vae, encoder=PromptConditioner(PromptEncoder([tiny_clip(seed=0)])))


def _record_text_conditioning(unet):
    seen = []
    handle = unet.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True
    )
    return seen, handle


def test_prompt_schedule_switches_at_its_step(paths, prompt_model):
    service = GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: prompt_model)
    seen, handle = _record_text_conditioning(prompt_model.unet)
    try:
        service.txt2img(
            Txt2ImgRequest(
                prompt="a [cat:dog:2] on a sofa",
                steps=4,
                width=64,
                height=64,
                seed=1,
                sampler_name="Euler",
                do_not_save_samples=True,
            )
        )
    finally:
        handle.remove()
    cond_rows = [s[0] for s in seen]
    assert len(cond_rows) == 4
    # A1111 (reconstruct_cond_batch): an entry ending at step 2 is used while step <= 2.
    assert torch.equal(cond_rows[0], cond_rows[1]) and torch.equal(cond_rows[1], cond_rows[2])
    assert not torch.equal(cond_rows[2], cond_rows[3])


def test_and_prompt_and_long_negative_run_in_one_unet_call_per_step(paths, prompt_model):
    service = GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: prompt_model)
    seen, handle = _record_text_conditioning(prompt_model.unet)
    try:
        result = service.txt2img(
            Txt2ImgRequest(
                prompt="a cat AND a dog :0.5",
                negative_prompt="blurry " * 90,
                steps=2,
                width=64,
                height=64,
                seed=1,
                sampler_name="Euler",
                batch_size=2,
                do_not_save_samples=True,
                do_not_save_grid=True,
            )
        )
    finally:
        handle.remove()
    assert len(seen) == 2  # one UNet call per step
    assert seen[0].shape[0] == 2 * 2 + 2  # two sub-prompts per image + one uncond per image
    assert seen[0].shape[1] == 154  # padded to the negative prompt's two chunks
    assert len(result.images) == 2


def test_interrupt_during_prompt_encoding_stops_before_the_next_encoding(paths, prompt_model):
    service = GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: prompt_model)
    control = GenerationControl()
    encodings = []

    def user_presses_interrupt(module, inputs, output):  # while the first AND part is being encoded
        encodings.append(inputs[0].shape)
        control.interrupt()

    text_encoder = prompt_model.encoder.text_encoders[0]
    hook = text_encoder.get_input_embeddings().register_forward_hook(user_presses_interrupt)
    seen, unet_hook = _record_text_conditioning(prompt_model.unet)
    try:
        result = service.txt2img(
            Txt2ImgRequest(
                prompt="a cat AND a dog AND a bird",
                steps=4,
                width=64,
                height=64,
                sampler_name="Euler",
                do_not_save_samples=True,
            ),
            control,
        )
    finally:
        hook.remove()
        unet_hook.remove()
    assert result.interrupted and result.images == []
    assert len(encodings) == 1 and seen == []  # "a dog", "a bird" and the negative were never encoded


def test_prompt_length_and_nesting_limits_hold_for_every_front_end(paths, prompt_model):
    service = GenerationService(
        SettingsStore(paths, Settings(prompt_max_length=200)), paths, lambda name, settings: prompt_model
    )
    request = {"steps": 2, "width": 64, "height": 64, "do_not_save_samples": True}
    with pytest.raises(InvalidRequest, match="negative_prompt: is 201 characters long; at most 200") as refused:
        service.txt2img(Txt2ImgRequest(prompt="a cat", negative_prompt="x" * 201, **request))
    assert refused.value.field == "negative_prompt"
    with pytest.raises(InvalidRequest, match="hr_prompt: has 101 brackets open at once"):
        service.txt2img(Txt2ImgRequest(prompt="a cat", hr_prompt="[" * 101, **request))
