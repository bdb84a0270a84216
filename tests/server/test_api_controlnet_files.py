"""A ControlNet file in models/ControlNet (lllyasviel's original layout) is listed and steers a job over HTTP,
through the app's own wiring (no injected provider)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from tiny_models import tiny_controlnet

from sdstudio.app import open_app
from sdstudio.models.controlnet import original_state_dict
from server.conftest import start_server

BODY = dict(prompt="a red circle", width=64, height=64, steps=3, sampler_name="Euler", seed=7)


def square_png() -> str:
    image = Image.new("RGB", (64, 64))
    ImageDraw.Draw(image).rectangle((16, 16, 40, 40), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pixels(answer: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))).convert("RGB"))


def test_a_file_in_models_controlnet_is_listed_and_used(tmp_path):
    data = tmp_path / "data"
    app = open_app(data)
    unet = app.engine.model_source(None, app.settings_store.current).unet
    folder = data / "models" / "ControlNet"
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_controlnet(unet, scale=0.2, image_scale=50.0)
    save_file(original_state_dict(model), folder / "tiny_canny.safetensors")
    running = start_server(app)
    try:
        with running.client() as client:
            [title] = client.get("/controlnet/model_list").json()["model_list"]
            assert title.startswith("tiny_canny [") and title.endswith("]")
            unit = {"input_image": square_png(), "module": "canny", "model": "canny", "weight": 1.0}
            plain = client.post("/sdapi/v1/txt2img", json=BODY)
            body = {**BODY, "alwayson_scripts": {"controlnet": {"args": [unit]}}}
            steered = client.post("/sdapi/v1/txt2img", json=body)
            assert plain.status_code == steered.status_code == 200, steered.text[:500]
            assert not np.array_equal(pixels(plain.json()), pixels(steered.json()))
            infotext = json.loads(steered.json()["info"])["infotexts"][0]
            assert "ControlNet 0:" in infotext and f"Model: {title}" in infotext
    finally:
        running.stop()
