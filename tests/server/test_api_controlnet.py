"""ControlNet over sd-webui-controlnet's API: units in alwayson_scripts.controlnet.args, and /controlnet/*."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from tiny_models import tiny_controlnet

from sdstudio.app import open_app
from sdstudio.errors import NotFound
from server.conftest import start_server

SMALL = dict(prompt="a red circle", width=64, height=64, steps=3, sampler_name="Euler", seed=7)
MODEL = "tiny_canny [0123abcd]"


class TinyControlNets:
    """A ControlNet made from the bundled model's UNet (random output convolutions), found as cnmodels finds."""

    def __init__(self, unet) -> None:
        self.models = {MODEL: tiny_controlnet(unet, scale=0.2, image_scale=50.0)}

    def titles(self) -> list[str]:
        return list(self.models)

    def load(self, name: str):
        for title, model in self.models.items():
            if name and name in title:
                return model
        raise NotFound(f"ControlNet model {name!r} is not in models/ControlNet")

    def title(self, name: str) -> str:
        return next(title for title in self.models if name and name in title)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    app = open_app(data_dir)
    unet = app.engine.model_source(None, app.settings_store.current).unet
    app.engine.controlnets = TinyControlNets(unet)
    running = start_server(app)
    yield running
    running.stop()


def square_png(offset: int = 16) -> str:
    image = Image.new("RGB", (64, 64))
    ImageDraw.Draw(image).rectangle((offset, offset, offset + 24, offset + 24), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def webuiapi_unit(**changes) -> dict:
    """The body webuiapi's ControlNetUnit.to_dict() sends."""
    unit = {
        "input_image": square_png(),
        "mask": None,
        "module": "canny",
        "model": "tiny_canny",
        "weight": 1.0,
        "resize_mode": "Resize and Fill",
        "lowvram": False,
        "processor_res": 64,
        "threshold_a": 64,
        "threshold_b": 64,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "control_mode": 0,
        "pixel_perfect": False,
    }
    return {**unit, **changes}


def generate(client, *units, path: str = "txt2img", **fields) -> dict:
    body = {**SMALL, **fields}
    if units:
        body["alwayson_scripts"] = {"controlnet": {"args": list(units)}}
    answer = client.post(f"/sdapi/v1/{path}", json=body)
    assert answer.status_code == 200, answer.text[:400]
    return answer.json()


def pixels(body: dict) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def infotext(body: dict) -> str:
    with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as image:
        return image.info["parameters"]


def test_webuiapi_unit_steers_the_image_and_the_infotext_names_it(server):
    with server.client() as client:
        plain = generate(client)
        controlled = generate(client, webuiapi_unit())
        assert np.abs(pixels(controlled) - pixels(plain)).max() > 3
        assert (
            'ControlNet 0: "Module: canny, Model: tiny_canny [0123abcd], Weight: 1.0, Resize Mode: Resize and Fill, '
            "Processor Res: 64, Threshold A: 64.0, Threshold B: 64.0, Guidance Start: 0.0, Guidance End: 1.0, "
            'Pixel Perfect: False, Control Mode: Balanced"'
        ) in infotext(controlled)
        moved = generate(client, webuiapi_unit(input_image=square_png(offset=36)))
        assert np.abs(pixels(moved) - pixels(controlled)).max() > 0  # the control image reaches the model


def test_weight_zero_guidance_end_zero_and_disabled_units_give_the_image_without_a_unit(server):
    with server.client() as client:
        plain = pixels(generate(client))
        for unit in (webuiapi_unit(weight=0), webuiapi_unit(guidance_end=0), webuiapi_unit(enabled=False)):
            assert np.array_equal(pixels(generate(client, unit)), plain), unit["weight"]


def test_two_units_combine_and_control_modes_differ(server):
    with server.client() as client:
        one = generate(client, webuiapi_unit())
        two = generate(client, webuiapi_unit(), webuiapi_unit(input_image=square_png(offset=36), weight=0.5))
        assert np.abs(pixels(two) - pixels(one)).max() > 3
        assert "ControlNet 1: " in infotext(two)
        modes = [pixels(generate(client, webuiapi_unit(control_mode=mode))) for mode in (0, 1, 2)]
        assert not np.array_equal(modes[0], modes[1]) and not np.array_equal(modes[0], modes[2])
        assert "Control Mode: My prompt is more important" in infotext(
            generate(client, webuiapi_unit(control_mode="My prompt is more important"))
        )


def test_img2img_inpaint_and_hires_run_with_a_unit(server):
    with server.client() as client:
        hires = dict(enable_hr=True, hr_scale=2, hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.6)
        plain_hr = generate(client, **hires)
        unit_hr = generate(client, webuiapi_unit(), **hires)
        assert pixels(unit_hr).shape == (128, 128, 3)
        assert np.abs(pixels(unit_hr) - pixels(plain_hr)).max() > 3
        init = dict(init_images=[square_png(8)], denoising_strength=0.8)
        plain_i2i = generate(client, path="img2img", **init)
        unit_i2i = generate(client, webuiapi_unit(), path="img2img", **init)
        assert np.abs(pixels(unit_i2i) - pixels(plain_i2i)).max() > 3
        mask = square_png(20)
        inpaint = generate(client, webuiapi_unit(input_image=None), path="img2img", mask=mask, **init)
        assert 'ControlNet 0: "Module: canny' in infotext(inpaint)


@pytest.mark.parametrize(
    ("unit", "field", "words"),
    [
        (webuiapi_unit(model="missing_model"), "controlnet[0].model", "missing_model"),
        (webuiapi_unit(module="no_such_module"), "controlnet[0].module", "no_such_module"),
        (webuiapi_unit(input_image=None), "controlnet[0].image", "no image"),
        (webuiapi_unit(weight=7), "controlnet[0].weight", "2"),
        (webuiapi_unit(resize_mode=9), "controlnet[0].resize_mode", "Just Resize"),
        ("not a unit", "controlnet[0]", "object"),
    ],
)
def test_bad_units_get_a_422_naming_the_unit_field(server, unit, field, words):
    with server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
        assert answer.status_code == 422, answer.text[:300]
        assert field in answer.text and words in answer.text


def test_detect_with_canny_returns_an_edge_map(server):
    with server.client() as client:
        answer = client.post(
            "/controlnet/detect",
            json={
                "controlnet_module": "canny",
                "controlnet_input_images": [square_png()],
                "controlnet_processor_res": 64,
                "controlnet_threshold_a": 100,
                "controlnet_threshold_b": 200,
            },
        )
        assert answer.status_code == 200, answer.text[:300]
        body = answer.json()
        assert body["info"] == "Success" and len(body["images"]) == 1
        with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as image:
            edges = np.asarray(image.convert("L"))
        assert set(np.unique(edges)) <= {0, 255}
        assert edges[16:41, 16].max() == 255 and edges[28, 28] == 0 and edges[2, 2] == 0
        assert client.post("/controlnet/detect", json={"controlnet_module": "nope"}).status_code == 422
        empty = client.post("/controlnet/detect", json={"controlnet_module": "canny"})
        assert empty.status_code == 422 and "controlnet_input_images" in empty.text


def test_listings_version_models_modules_settings_control_types(server):
    with server.client() as client:
        assert client.get("/controlnet/version").json() == {"version": 2}
        assert client.get("/controlnet/model_list").json() == {"model_list": [MODEL]}
        modules = client.get("/controlnet/module_list?alias_names=false").json()
        assert {"none", "canny"} <= set(modules["module_list"]) and "canny" in modules["module_detail"]
        assert client.get("/controlnet/settings").json() == {"control_net_unit_count": 3}
        canny = client.get("/controlnet/control_types").json()["control_types"]["Canny"]
        assert canny["default_option"] == "canny" and canny["default_model"] == MODEL
