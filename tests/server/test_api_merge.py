"""POST /sdapi/v1/merge-checkpoints over real HTTP: the merged bundled-sized model is listed, hashed and generates."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from sdstudio.app import open_app
from sdstudio.models.detect import bundled_tiny_model

from .conftest import start_server

# What an A1111 client sends: run_modelmerger's parameters, with the Checkpoint Merger's defaults.
A1111_MERGE_BODY = {
    "primary_model_name": "sdstudio-tiny.safetensors",
    "secondary_model_name": "noisy.safetensors",
    "tertiary_model_name": "",
    "interp_method": "Weighted sum",
    "multiplier": 1.0,
    "save_as_half": False,
    "custom_name": "",
    "checkpoint_format": "safetensors",
    "config_source": 0,
    "bake_in_vae": "None",
    "discard_weights": "",
    "save_metadata": True,
}
GENERATE = {"prompt": "a red circle", "seed": 3, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}


@pytest.fixture
def server(data_dir):
    """A server whose data dir holds `noisy.safetensors`: the bundled model with every weight moved a little."""
    bundled = bundled_tiny_model()
    assert bundled is not None
    generator = torch.Generator().manual_seed(0)
    noisy = {
        key: value + 0.05 * value.std().nan_to_num() * torch.randn(value.shape, generator=generator).to(value.dtype)
        if value.is_floating_point() and value.numel() > 1
        else value
        for key, value in load_file(bundled).items()
    }
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    save_file(noisy, folder / "noisy.safetensors")
    (folder / "noisy.yaml").write_bytes(bundled.with_suffix(".yaml").read_bytes())
    running = start_server(open_app(data_dir))
    yield running
    running.stop()


def image_pixels(client, checkpoint: str) -> tuple[np.ndarray, str]:
    body = {**GENERATE, "override_settings": {"sd_model_checkpoint": checkpoint}}
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    return np.asarray(image.convert("RGB")), json.loads(answer.json()["info"])["infotexts"][0]


def test_merged_checkpoint_is_listed_hashed_and_generates_as_its_weights_say(server):
    with server.client() as client:
        answer = client.post("/sdapi/v1/merge-checkpoints", json=A1111_MERGE_BODY)
        assert answer.status_code == 200, answer.text
        merged = answer.json()
        name = "0.0(sdstudio-tiny) + 1.0(noisy).safetensors"
        assert merged["filename"].endswith("/models/Stable-diffusion/" + name)
        assert merged["info"] == f"Checkpoint saved to {merged['filename']}"
        assert merged["config"].endswith("0.0(sdstudio-tiny) + 1.0(noisy).yaml")  # the bundled model's yaml
        listed = {item["title"]: item for item in client.get("/sdapi/v1/sd-models").json()}
        assert merged["title"] in listed and merged["title"] == f"{name} [{merged['sha256'][:10]}]"
        assert listed[merged["title"]]["sha256"] == merged["sha256"]

        # M = 1 gives B's weights exactly: the merged file draws what noisy.safetensors draws, under its own hash.
        pixels, infotext = image_pixels(client, merged["title"])
        noisy_pixels, _ = image_pixels(client, "noisy.safetensors")
        bundled_pixels, _ = image_pixels(client, "sdstudio-tiny.safetensors")
        assert np.array_equal(pixels, noisy_pixels)
        assert not np.array_equal(pixels, bundled_pixels)
        assert f"Model hash: {merged['sha256'][:10]}" in infotext

        # An A1111 client that sends the same merge again gets a 422, not an overwritten file.
        again = client.post("/sdapi/v1/merge-checkpoints", json=A1111_MERGE_BODY)
        assert again.status_code == 422 and again.json()["detail"].startswith("custom_name: ")


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"primary_model_name": "nope"}, 404, "primary_model_name"),
        ({"secondary_model_name": "nope.safetensors"}, 404, "secondary_model_name"),
        ({"interp_method": "Add difference"}, 422, "tertiary_model_name"),
        ({"interp_method": "Average"}, 422, "interp_method"),
        ({"bake_in_vae": "missing.pt"}, 404, "bake_in_vae"),
        ({"discard_weights": "(unclosed"}, 422, "discard_weights"),
        ({"custom_name": "../outside"}, 422, "custom_name"),
        ({"config_source": 7}, 422, "config_source"),
        ({"multiplier": "lots"}, 422, "multiplier"),
    ],
)
def test_bad_merge_bodies_are_4xx_naming_the_field(server, changes, status, field):
    with server.client() as client:
        answer = client.post("/sdapi/v1/merge-checkpoints", json={**A1111_MERGE_BODY, **changes})
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert field in json.dumps(body["detail"]), body
    assert not list((server.app.paths.folder("checkpoint")).glob("0.0*"))


def test_merge_route_is_documented(server):
    with server.client() as client:
        schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/sdapi/v1/merge-checkpoints"]["post"]
    assert "Checkpoint Merger" in operation["description"]
    body = schema["components"]["schemas"]["MergeCheckpointsRequest"]["properties"]
    assert set(A1111_MERGE_BODY) <= set(body)
