"""Hostile request values (issue #19 class 2): a 422 naming the field, never a 500 or a black image.

The bodies are raw JSON text as a client writes it: Python's json module reads `NaN` and
`Infinity` (and `1e308` as a float), so they reach the server exactly like this.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from sdstudio.app import open_app

from .conftest import start_server

SMALL = {"steps": 1, "width": 64, "height": 64, "seed": 1234, "sampler_name": "Euler"}


@pytest.fixture
def server(data_dir_with_model):
    running = start_server(open_app(data_dir_with_model))
    yield running
    running.stop()


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def raw_body(fields: dict, field: str, raw_value: str) -> str:
    """The JSON text of `fields` plus `"field": raw_value`, the value written verbatim (NaN, 1e308...)."""
    return json.dumps(fields)[:-1] + f', "{field}": {raw_value}}}'


def post_raw(client, route: str, text: str):
    return client.post(f"/sdapi/v1/{route}", content=text, headers={"Content-Type": "application/json"})


INIT = png_base64(Image.new("RGB", (64, 64), "red"))
EXTRAS = {"image": INIT, "upscaler_1": "Lanczos", "upscaling_resize": 2}
EXTRAS_BATCH = {"imageList": [{"data": INIT, "name": "a.png"}], "upscaler_1": "Lanczos", "upscaling_resize": 2}

HOSTILE = [
    *(
        ("txt2img", SMALL, field, value)
        for field, value in (
            ("steps", "NaN"),
            ("seed", "Infinity"),
            ("seed", "1e308"),
            ("subseed", "-Infinity"),
            ("cfg_scale", "NaN"),
            ("denoising_strength", "Infinity"),
            ("eta", "NaN"),
            ("eta", "1e308"),
            ("eta", "-1"),
            ("s_churn", "NaN"),
            ("s_tmin", "Infinity"),
            ("s_tmax", "NaN"),
            ("s_noise", "-Infinity"),
            ("s_noise", "-0.5"),
            ("hr_cfg", "NaN"),
            ("hr_cfg", "1e308"),
            ("hr_scale", "1e308"),
            ("subseed_strength", "NaN"),
            ("refiner_switch_at", "NaN"),
            ("width", "1e308"),
            ("batch_size", "NaN"),
            ("seed_resize_from_w", "1e308"),
            ("seed_resize_from_w", "100000"),
            ("seed_resize_from_h", "-100000"),
        )
    ),
    *(
        ("img2img", {**SMALL, "init_images": [INIT]}, field, value)
        for field, value in (
            ("initial_noise_multiplier", "NaN"),
            ("initial_noise_multiplier", "1e308"),
            ("denoising_strength", "NaN"),
            ("mask_blur", "Infinity"),
            ("steps", "1e308"),
        )
    ),
    *(
        ("extra-single-image", EXTRAS, field, value)
        for field, value in (
            ("upscaling_resize", "NaN"),
            ("upscaling_resize", "Infinity"),
            ("upscaling_resize", "1e308"),
            ("upscaling_resize_w", "1e308"),
            ("upscaling_resize_h", "100000"),
            ("gfpgan_visibility", "NaN"),
        )
    ),
    *(
        ("extra-batch-images", EXTRAS_BATCH, field, value)
        for field, value in (
            ("upscaling_resize", "Infinity"),
            ("upscaling_resize", "1e308"),
            ("upscaling_resize_w", "1e308"),
        )
    ),
]


def test_non_finite_huge_and_out_of_range_numbers_are_422_naming_the_field(server):
    wrong = []
    with server.client() as client:
        for route, fields, field, value in HOSTILE:
            answer = post_raw(client, route, raw_body(fields, field, value))
            errors = answer.json().get("errors", "") if answer.status_code == 422 else ""
            if field not in errors:
                wrong.append(f"{route} {field}={value}: {answer.status_code} {answer.text[:200]}")
        assert not wrong, "\n".join(wrong)
        # The server still answers, and sensible values of the same fields are accepted.
        fine = {**SMALL, "eta": 0.5, "s_noise": 1.0, "s_churn": 0.5, "seed_resize_from_w": 64, "seed_resize_from_h": 64}
        answer = client.post("/sdapi/v1/txt2img", json=fine)
        assert answer.status_code == 200, answer.text[:300]
        assert np.asarray(decoded(answer.json()["images"][0])).std() > 0, "a real image, not a flat one"
        extras = client.post("/sdapi/v1/extra-single-image", json=EXTRAS)
        assert extras.status_code == 200 and decoded(extras.json()["image"]).size == (128, 128)


@pytest.mark.parametrize("full_res", [True, False])
def test_a_mask_of_another_size_is_stretched_over_the_init_image(server, full_res):
    # The mask (32x48) marks the left half for repainting; the init image is 64x64.
    mask = Image.new("L", (32, 48), 0)
    mask.paste(255, (0, 0, 16, 48))
    body = {
        **SMALL,
        "init_images": [INIT],
        "mask": png_base64(mask),
        "mask_blur": 0,
        "inpaint_full_res": full_res,
        "denoising_strength": 1.0,
    }
    with server.client() as client:
        answer = client.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text[:300]
    result = np.asarray(decoded(answer.json()["images"][0]).convert("RGB")).astype(int)
    assert result.shape == (64, 64, 3)
    assert (result[:, 40:] == (255, 0, 0)).all(), "the right half, outside the stretched mask, is kept"
    assert (result[:, :24] != (255, 0, 0)).any(), "the left half is repainted"


@pytest.mark.parametrize(
    "prompt, expected_in_name",
    [("\ud800 a lone surrogate", "a_lone_surrogate"), ("日本語の猫と犬 " * 60, "日本語の猫と犬")],
    ids=["lone-surrogate", "long-non-ascii"],
)
def test_prompts_that_cannot_be_file_names_as_they_are_still_save(server, prompt, expected_in_name):
    text = json.dumps({**SMALL, "prompt": prompt, "save_images": True})  # ensure_ascii: "\ud800" stays escaped
    with server.client() as client:
        answer = post_raw(client, "txt2img", text)
        assert answer.status_code == 200, answer.text[:300]
        assert client.get("/sdapi/v1/progress").status_code == 200
    saved = list((server.app.paths.outputs / "txt2img-images").rglob("*.png"))
    assert len(saved) == 1
    name = saved[0].name
    assert len(name.encode("utf-8")) <= 255
    assert expected_in_name in name.replace(" ", "_")
    with Image.open(saved[0]) as image:
        assert image.info["parameters"].startswith(prompt[:20].replace("\ud800", "\ufffd"))
