"""Requests are validated at the edge with errors that name the A1111 field."""

from __future__ import annotations

import base64
import io
import math
import re

import pytest
from PIL import Image

from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest
from sdstudio.errors import InvalidRequest


@pytest.mark.parametrize(
    "fields, field_name",
    [
        ({"width": 513}, "width"),
        ({"height": 0}, "height"),
        ({"steps": 0}, "steps"),
        ({"steps": 100000}, "steps"),
        ({"sampler_name": "Nonexistent"}, "sampler_name"),
        ({"scheduler": "Sideways"}, "scheduler"),
        ({"cfg_scale": -1}, "cfg_scale"),
        ({"denoising_strength": 1.5}, "denoising_strength"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -5}, "seed"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"width": "wide"}, "width"),
    ],
)
def test_bad_txt2img_field_is_named(fields, field_name):
    with pytest.raises(InvalidRequest) as info:
        Txt2ImgRequest(**fields)
    assert info.value.field == field_name
    assert "\n" not in str(info.value)


def test_defaults_are_a1111s():
    r = Txt2ImgRequest()
    assert (r.steps, r.cfg_scale, r.width, r.height, r.seed, r.batch_size, r.n_iter) == (50, 7.0, 512, 512, -1, 1, 1)
    assert (r.enable_hr, r.hr_scale, r.hr_upscaler, r.denoising_strength) == (False, 2.0, "Latent", 0.75)


@pytest.mark.parametrize(
    "name, sampler, schedule",
    [
        ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
        ("k_euler_a", "Euler a", "Automatic"),
        ("euler a", "Euler a", "Automatic"),
        ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
    ],
)
def test_old_combined_sampler_names_are_split(name, sampler, schedule):
    r = Txt2ImgRequest(sampler_name=name)
    assert (r.sampler_name, r.scheduler) == (sampler, schedule)


def _png_b64(color=(10, 20, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_img2img_images_decoded_from_base64_data_url_and_path(tmp_path):
    path = tmp_path / "init.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    r = Img2ImgRequest(init_images=[_png_b64(), "data:image/png;base64," + _png_b64((5, 5, 5)), path], mask=_png_b64())
    assert [im.size for im in r.init_images] == [(16, 16), (16, 16), (8, 8)]
    assert r.init_images[1].getpixel((0, 0)) == (5, 5, 5)
    assert r.mask.size == (16, 16)


@pytest.mark.parametrize(
    "fields, field_name",
    [
        ({"init_images": ["not an image"]}, "init_images"),
        ({}, "init_images"),
        ({"init_images": [Image.new("RGB", (8, 8))], "mask": "Zm9v"}, "mask"),
        ({"init_images": [Image.new("RGB", (8, 8))], "inpainting_fill": 7}, "inpainting_fill"),
    ],
)
def test_bad_img2img_inputs_are_named(fields, field_name):
    with pytest.raises(InvalidRequest) as info:
        Img2ImgRequest(**fields)
    assert info.value.field == field_name


def test_plain_string_is_never_read_as_a_path(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(InvalidRequest):
        Img2ImgRequest(init_images=[str(path)])


def test_hires_size_follows_a1111():
    assert Txt2ImgRequest(width=512, height=768, enable_hr=True, hr_scale=1.5).hires_size() == (768, 1152)
    assert Txt2ImgRequest(width=512, height=768, enable_hr=True, hr_resize_x=1024).hires_size() == (1024, 1536)


def _numeric_fields(request_type) -> list[str]:
    """The request's int and float fields, read from the model (a new number field is covered unasked)."""
    return [
        name
        for name, info in request_type.model_fields.items()
        if re.search(r"\b(float|int)\b", str(info.annotation)) and "bool" not in str(info.annotation)
    ]


@pytest.mark.parametrize("request_type", [Txt2ImgRequest, Img2ImgRequest])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e308])
def test_every_number_field_refuses_nan_infinity_and_huge_values_by_name(request_type, value):
    init = {"init_images": [Image.new("RGB", (8, 8))]} if request_type is Img2ImgRequest else {}
    fields = _numeric_fields(request_type)
    assert {"steps", "seed", "cfg_scale", "eta", "s_noise", "seed_resize_from_w"} <= set(fields)
    for name in fields:
        with pytest.raises(InvalidRequest) as info:
            request_type(**init, **{name: value})
        assert info.value.field == name


@pytest.mark.parametrize(
    "fields, field_name",
    [
        ({"eta": -0.1}, "eta"),
        ({"s_noise": -1}, "s_noise"),
        ({"s_churn": 1001}, "s_churn"),
        ({"hr_cfg": 1000}, "hr_cfg"),
        ({"seed_resize_from_w": 100000}, "seed_resize_from_w"),
        ({"seed_resize_from_h": 4}, "seed_resize_from_h"),
    ],
)
def test_sampler_options_out_of_range_are_named(fields, field_name):
    with pytest.raises(InvalidRequest) as info:
        Txt2ImgRequest(**fields)
    assert info.value.field == field_name


def test_sampler_options_in_range_and_seed_resize_off_are_accepted():
    request = Txt2ImgRequest(eta=1.0, s_noise=1.0, s_tmax=0, hr_cfg=5, seed_resize_from_w=0, seed_resize_from_h=-1)
    assert request.eta == 1.0 and request.seed_resize_from_w == 0


def test_lone_surrogates_in_prompts_become_replacement_characters():
    request = Txt2ImgRequest(prompt=["a \ud800 cat"], negative_prompt="dog \udfff", styles=["x\ud83d"])
    assert request.prompt == ["a \ufffd cat"] and request.negative_prompt == "dog \ufffd"
    assert request.styles == ["x\ufffd"]
    assert Txt2ImgRequest(prompt="\U0001f600").prompt == "\U0001f600"


def test_request_bounds_never_refuse_what_a_limit_setting_allows(data_dir):
    """Each limit setting owns its limit: a request's own bounds stop where the setting may go, and say so."""
    from sdstudio.config import DataPaths, SettingsStore
    from sdstudio.engine.request import check_limits

    store = SettingsStore(DataPaths(data_dir).ensure())
    for option, too_high in (("limit_steps", 1001), ("limit_images_per_job", 10_001)):
        with pytest.raises(InvalidRequest) as info:
            store.check({option: too_high})
        assert info.value.field == option
    store.change({"limit_steps": 1000, "limit_images_per_job": 10_000, "limit_batch_megapixels": 0})
    for fields in (
        {"steps": 1000, "enable_hr": True, "hr_second_pass_steps": 1000},
        {"batch_size": 100, "n_iter": 100},
        {"batch_size": 10_000},
    ):
        check_limits(Txt2ImgRequest(**fields), store.current)  # what the settings allow, the request takes
    for fields, field_name, setting in (
        ({"steps": 1001}, "steps", "limit_steps"),
        ({"enable_hr": True, "hr_second_pass_steps": 1001}, "hr_second_pass_steps", "limit_steps"),
        ({"batch_size": 10_001}, "batch_size", "limit_images_per_job"),
        ({"n_iter": 10_001}, "n_iter", "limit_images_per_job"),
        ({"batch_size": 200, "n_iter": 100}, "n_iter", "limit_images_per_job"),
        ({"width": 8200}, "width", "limit_batch_megapixels"),
    ):
        with pytest.raises(InvalidRequest) as info:
            Txt2ImgRequest(**fields)
        assert info.value.field == field_name and setting in info.value.reason, (fields, str(info.value))
