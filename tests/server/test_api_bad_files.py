"""Hostile and broken files over real HTTP: decompression bombs are a 4xx naming the field, and one bad
model file neither breaks the listings nor can be selected (#19, classes 4 and 5)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from bad_files import png_declaring, write_bad_model_files, write_good_safetensors
from PIL import Image

from sdstudio.app import open_app

from .conftest import start_server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def small_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    return b64(buffer.getvalue())


@pytest.fixture(scope="module")
def bombs() -> dict[str, str]:
    """Base64 PNGs declaring 100 Mpx (Pillow only warns) and 400 Mpx (Pillow's own error)."""
    return {
        "100 Mpx": b64(png_declaring(10_000, 10_000)),
        "400 Mpx": b64(png_declaring(20_000, 20_000, complete=False)),
    }


EXTRAS = {"upscaling_resize": 2, "upscaler_1": "Lanczos"}

# (route, body with the image in it, the field the answer must name), as A1111 clients send them
BOMB_ROUTES = [
    ("img2img", lambda bomb: {"init_images": [bomb], "steps": 1}, "init_images"),
    ("img2img", lambda bomb: {"init_images": [small_png()], "mask": bomb, "steps": 1}, "mask"),
    ("png-info", lambda bomb: {"image": bomb}, "image"),
    ("extra-single-image", lambda bomb: {**EXTRAS, "image": bomb}, "image"),
    (
        "extra-batch-images",
        lambda bomb: {**EXTRAS, "imageList": [{"data": small_png(), "name": "a.png"}, {"data": bomb, "name": "b.png"}]},
        "imageList[1].data",
    ),
    ("interrogate", lambda bomb: {"image": bomb, "model": "clip"}, "image"),
]


@pytest.mark.parametrize("size", ["100 Mpx", "400 Mpx"])
def test_decompression_bombs_are_refused_naming_the_field_and_the_server_keeps_serving(api_server, bombs, size):
    with api_server.client() as client:
        for route, body, field in BOMB_ROUTES:
            answer = client.post(f"/sdapi/v1/{route}", json=body(bombs[size]))
            assert answer.status_code == 422, (route, field, answer.text)
            detail = answer.json()["detail"]
            assert detail.startswith(f"{field}: image too large"), (route, detail)
            assert "img_max_decode_mp" in detail, detail
        assert client.get("/sdapi/v1/progress").status_code == 200


def test_the_pixel_limit_is_a_setting(api_server):
    with api_server.client() as client:
        assert client.post("/sdapi/v1/png-info", json={"image": small_png()}).status_code == 200
        assert client.post("/sdapi/v1/options", json={"img_max_decode_mp": 0.004}).status_code == 200
        refused = client.post("/sdapi/v1/png-info", json={"image": small_png()})  # 64×64 = 0.0041 Mpx
        assert refused.status_code == 422 and "limit is 0.004 megapixels" in refused.json()["detail"]
        over_pillow = client.post("/sdapi/v1/options", json={"img_max_decode_mp": 500})
        assert over_pillow.status_code == 422 and "img_max_decode_mp" in over_pillow.json()["detail"]


@pytest.fixture
def bad_models_server(data_dir):
    """A server whose checkpoint and VAE folders hold one broken file of each kind beside good ones."""
    bad_checkpoints = write_bad_model_files(data_dir / "models" / "Stable-diffusion")
    bad_vaes = write_bad_model_files(data_dir / "models" / "VAE")
    write_good_safetensors(data_dir / "models" / "VAE" / "good-vae.safetensors")
    running = start_server(open_app(data_dir))
    yield running, bad_checkpoints, bad_vaes
    running.stop()


def test_bad_model_files_leave_the_listings_working(bad_models_server):
    server, bad_checkpoints, bad_vaes = bad_models_server
    with server.client() as client:
        models = client.get("/sdapi/v1/sd-models")
        assert models.status_code == 200, models.text
        assert [item["model_name"] for item in models.json()] == ["sdstudio-tiny"]  # the bad ones are left out
        assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
        vaes = client.get("/sdapi/v1/sd-vae")
        assert vaes.status_code == 200, vaes.text
        assert [item["model_name"] for item in vaes.json()] == ["good-vae.safetensors"]
        assert client.post("/sdapi/v1/refresh-vae").status_code == 200
    assert bad_checkpoints and bad_vaes


def test_selecting_a_bad_model_file_is_refused_with_the_reason_and_not_saved(bad_models_server):
    server, bad_checkpoints, bad_vaes = bad_models_server
    with server.client() as client:
        for option, bad in (("sd_model_checkpoint", bad_checkpoints), ("sd_vae", bad_vaes)):
            for name, reason in bad.items():
                answer = client.post("/sdapi/v1/options", json={option: name})
                assert answer.status_code == 422, (option, name, answer.text)
                detail = answer.json()["detail"]
                assert detail.startswith(f"{option}: {name} cannot be used: ") and reason in detail, detail
        options = client.get("/sdapi/v1/options").json()
        assert options["sd_model_checkpoint"] == "" and options["sd_vae"] == "Automatic"
        name, reason = next(iter(bad_checkpoints.items()))
        body = {
            "prompt": "a cat",
            "steps": 1,
            "width": 64,
            "height": 64,
            "override_settings": {"sd_model_checkpoint": name},
        }
        answer = client.post("/sdapi/v1/txt2img", json=body)
        assert answer.status_code in (400, 422) and name in answer.text and reason in answer.text, answer.text
        assert client.get("/sdapi/v1/progress").status_code == 200


def test_a_selected_checkpoint_that_went_bad_is_a_client_error_naming_it(data_dir):
    (name, reason), *_ = write_bad_model_files(data_dir / "models" / "Stable-diffusion", (".safetensors",)).items()
    data_dir.joinpath("config.json").write_text(json.dumps({"sd_model_checkpoint": name}))  # chosen when it was whole
    server = start_server(open_app(data_dir))
    try:
        with server.client() as client:
            answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 1, "width": 64, "height": 64})
            assert answer.status_code == 400, answer.text
            assert f"{name} cannot be used: " in answer.json()["detail"] and reason in answer.json()["detail"]
            assert client.get("/sdapi/v1/sd-models").status_code == 200
    finally:
        server.stop()
