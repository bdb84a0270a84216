"""A1111's refiner: another checkpoint takes over part-way through denoising."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import tiny_generation_model, tiny_unet, tiny_vae

from sdstudio.config import Settings, SettingsStore
from sdstudio.engine.infotext import request_fields_from_infotext
from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest
from sdstudio.engine.service import GenerationService
from sdstudio.errors import InvalidRequest, NotFound

SMALL = dict(prompt="a red cube", width=64, height=64, steps=10, seed=3, sampler_name="Euler", do_not_save_grid=True)


class CountingModels:
    """Two tiny checkpoints by name, counting each UNet's evaluations."""

    def __init__(self, base, refiner):
        self.models = {"base": base, "refiner": refiner}
        self.calls = {"base": 0, "refiner": 0}
        for name, model in self.models.items():
            model.unet.register_forward_hook(lambda *_, name=name: self.calls.__setitem__(name, self.calls[name] + 1))

    def __call__(self, name, settings):
        return self.models[(name or "base").split(" [")[0]]  # "name [hash]" as the registry reads titles

    def locate(self, name):
        if name.split(" [")[0] not in self.models:
            raise NotFound(f"no checkpoint named {name!r}")
        return name

    def reset(self):
        self.calls = dict.fromkeys(self.calls, 0)


@pytest.fixture(scope="module")
def models():
    base = tiny_generation_model(tiny_unet(0), tiny_vae(0), name="base", short_hash="1111111111")
    refiner = tiny_generation_model(tiny_unet(5), tiny_vae(6), name="refiner", short_hash="2222222222")
    return CountingModels(base, refiner)


@pytest.fixture
def service(paths, models):
    models.reset()
    store = SettingsStore(paths, Settings())
    return GenerationService(store, paths, models, locate_checkpoint=models.locate, version="test")


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def test_refiner_takes_over_where_the_noise_level_says_and_is_named_in_the_infotext(service, models):
    base_alone = service.txt2img(Txt2ImgRequest(**SMALL))
    refiner_alone = service.txt2img(Txt2ImgRequest(**SMALL, override_settings={"sd_model_checkpoint": "refiner"}))
    models.reset()
    half = service.txt2img(Txt2ImgRequest(**SMALL, refiner_checkpoint="refiner", refiner_switch_at=0.5))
    base_steps_at_half = models.calls["base"]
    assert 0 < base_steps_at_half < 10 and models.calls["refiner"] == 10 - base_steps_at_half
    assert "Refiner: refiner [2222222222], Refiner switch at: 0.5" in half.infotexts[0]
    assert not np.array_equal(pixels(half), pixels(base_alone))
    assert not np.array_equal(pixels(half), pixels(refiner_alone))

    models.reset()
    late = service.txt2img(Txt2ImgRequest(**SMALL, refiner_checkpoint="refiner", refiner_switch_at=0.9))
    assert base_steps_at_half < models.calls["base"] < 10, "a later switch leaves more steps to the base"
    assert not np.array_equal(pixels(late), pixels(half))

    # Switching at 0 hands every step (and the decode) to the refiner; at 1 it never switches.
    at_once = service.txt2img(Txt2ImgRequest(**SMALL, refiner_checkpoint="refiner", refiner_switch_at=0.0))
    assert np.array_equal(pixels(at_once), pixels(refiner_alone))
    never = service.txt2img(Txt2ImgRequest(**SMALL, refiner_checkpoint="refiner", refiner_switch_at=1.0))
    assert np.array_equal(pixels(never), pixels(base_alone)) and "Refiner" not in never.infotexts[0]


def test_switch_by_sampling_steps_counts_evaluations(service, models):
    service.settings_store.change({"refiner_switch_by_sample_steps": True})
    result = service.txt2img(Txt2ImgRequest(**SMALL, refiner_checkpoint="refiner", refiner_switch_at=0.3))
    assert models.calls == {"base": 3, "refiner": 7}
    assert "Refiner switch by sampling steps: True" in result.infotexts[0]
    fields = request_fields_from_infotext(result.infotexts[0])
    assert fields["override_settings"]["refiner_switch_by_sample_steps"] is True


def test_infotext_with_a_refiner_reproduces_the_image(service):
    request = Txt2ImgRequest(**SMALL, refiner_checkpoint="refiner", refiner_switch_at=0.6, batch_size=2)
    first = service.txt2img(request)
    fields = request_fields_from_infotext(first.infotexts[1])
    assert fields["refiner_checkpoint"] == "refiner [2222222222]" and fields["refiner_switch_at"] == 0.6
    again = service.txt2img(Txt2ImgRequest(**{**fields, "do_not_save_grid": True}))
    assert np.array_equal(np.asarray(again.images[0].convert("RGB")), np.asarray(first.images[1].convert("RGB"))), (
        "the second image of the batch, from its own infotext"
    )


def test_in_a_hires_job_the_setting_chooses_the_pass_that_switches(service, models):
    hires = dict(
        SMALL, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=4, denoising_strength=0.8
    )
    second_pass = service.txt2img(Txt2ImgRequest(**hires, refiner_checkpoint="refiner", refiner_switch_at=0.5))
    assert models.calls["base"] >= 10 and 0 < models.calls["refiner"] < 4, "the default: only the hires pass"
    assert "Hires refiner" not in second_pass.infotexts[0] and "Refiner: refiner" in second_pass.infotexts[0]

    models.reset()
    service.settings_store.change({"hires_fix_refiner_pass": "first pass"})
    first_pass = service.txt2img(Txt2ImgRequest(**hires, refiner_checkpoint="refiner", refiner_switch_at=0.5))
    assert models.calls["base"] > 4 and 0 < models.calls["refiner"] < 10, "switched in the first pass only"
    assert "Hires refiner: first pass" in first_pass.infotexts[0]
    assert request_fields_from_infotext(first_pass.infotexts[0])["override_settings"] == {
        "hires_fix_refiner_pass": "first pass"
    }


def test_img2img_uses_the_refiner_too(service, models):
    init = service.txt2img(Txt2ImgRequest(**SMALL)).images[0]
    models.reset()
    request = Img2ImgRequest(
        **SMALL, init_images=[init], denoising_strength=0.6, refiner_checkpoint="refiner", refiner_switch_at=0.6
    )
    result = service.img2img(request)
    assert models.calls["base"] > 0 and models.calls["refiner"] > 0
    assert "Refiner: refiner" in result.infotexts[0]


def test_unknown_or_incompatible_refiner_is_refused_naming_the_field(service, models, paths):
    with pytest.raises(InvalidRequest) as unknown:
        service.txt2img(Txt2ImgRequest(**SMALL, refiner_checkpoint="nope", refiner_switch_at=0.5))
    assert unknown.value.field == "refiner_checkpoint" and "'nope'" in str(unknown.value)
    assert models.calls == {"base": 0, "refiner": 0}, "refused before any step"
    with pytest.raises(InvalidRequest) as out_of_range:
        Txt2ImgRequest(**SMALL, refiner_checkpoint="refiner", refiner_switch_at=1.5)
    assert out_of_range.value.field == "refiner_switch_at"
    assert Txt2ImgRequest(**SMALL, refiner_checkpoint="None").refiner_checkpoint is None  # A1111's "no refiner"

    inpainting = CountingModels(
        tiny_generation_model(tiny_unet(0), tiny_vae(0)),
        tiny_generation_model(tiny_unet(1, in_channels=9), tiny_vae(0), name="inpaint"),
    )
    other = GenerationService(SettingsStore(paths, Settings()), paths, inpainting, locate_checkpoint=inpainting.locate)
    with pytest.raises(InvalidRequest) as mismatch:
        other.txt2img(Txt2ImgRequest(**SMALL, refiner_checkpoint="refiner", refiner_switch_at=0.5))
    assert mismatch.value.field == "refiner_checkpoint" and "inpainting" in str(mismatch.value)


@pytest.mark.parametrize("sampler", ["DDIM", "DPM++ 2M", "Heun"])
def test_timestep_and_multi_evaluation_samplers_switch_part_way(service, models, sampler):
    request = Txt2ImgRequest(**{**SMALL, "sampler_name": sampler}, refiner_checkpoint="refiner", refiner_switch_at=0.5)
    service.txt2img(request)
    assert models.calls["base"] > 0 and models.calls["refiner"] > 0, models.calls


def test_after_a_first_pass_switch_the_hires_pass_starts_again_on_the_jobs_checkpoint(service, models):
    """A1111 reloads the job's checkpoint (or hr_checkpoint_name's) for the hires pass."""
    hires = dict(SMALL, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=4)
    service.settings_store.change({"hires_fix_refiner_pass": "first pass"})
    service.txt2img(Txt2ImgRequest(**hires, refiner_checkpoint="refiner", refiner_switch_at=0.5))
    first_pass_only = dict(models.calls)
    models.reset()
    service.settings_store.change({"hires_fix_refiner_pass": "both passes"})
    both = service.txt2img(Txt2ImgRequest(**hires, refiner_checkpoint="refiner", refiner_switch_at=0.5))
    assert first_pass_only["refiner"] < models.calls["refiner"], "both passes switch"
    assert "Hires refiner: both passes" in both.infotexts[0]
    models.reset()
    on_refiner = service.txt2img(Txt2ImgRequest(**hires, hr_checkpoint_name="refiner"))
    assert models.calls == {"base": 10, "refiner": 4}
    assert "Hires checkpoint: refiner [2222222222]" in on_refiner.infotexts[0]
