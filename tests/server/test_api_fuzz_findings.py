"""What the fuzz suite (tests/fuzz, issue #19) found answering 500, each class answered as it should now.

A 422 naming the option: output folders the file system cannot hold (a name or a path too
long), a clip skip deeper than the model's text encoder, a size option too large to count in
bytes. An option value with a lone surrogate is saved with U+FFFD in its place, as request
bodies already were (config.json is UTF-8, which cannot hold one). The bodies are the JSON an
A1111 client sends; the server runs the bundled model.
"""

from __future__ import annotations

import json

import pytest

SMALL = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 1, "sampler_name": "Euler"}


UNUSABLE_FOLDERS = {
    "100 KB name": "a" * 100_000,
    "20k non-ASCII name": "é" * 20_000,  # 40,000 bytes in UTF-8
    "5 KB path of short names": "/".join(["b" * 200] * 25),
}


@pytest.mark.parametrize("folder", UNUSABLE_FOLDERS.values(), ids=UNUSABLE_FOLDERS.keys())
@pytest.mark.parametrize("option", ["outdir_samples", "outdir_img2img_grids"])
def test_output_folders_the_file_system_cannot_hold_are_refused_naming_the_option(api_server, option, folder):
    with api_server.client() as client:
        before = client.get("/sdapi/v1/options").json()[option]
        saved = client.post("/sdapi/v1/options", json={option: folder})
        overridden = client.post(
            "/sdapi/v1/txt2img", json={**SMALL, "save_images": True, "override_settings": {option: folder}}
        )
        for answer in (saved, overridden):
            assert answer.status_code == 422, answer.text[:300]
            assert option in answer.json()["detail"]
            assert "too long" in answer.json()["detail"]
            assert len(answer.text) < 2000, "the value is not echoed whole"
        assert client.get("/sdapi/v1/options").json()[option] == before
        assert client.post("/sdapi/v1/txt2img", json={**SMALL, "save_images": True}).status_code == 200


def test_option_values_with_a_lone_surrogate_are_saved_as_writable_text(api_server):
    text = json.dumps({"sdstudio_test_extension_note": "x\ud800y", "sd_vae": "Automatic"})  # "\ud800" escaped
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/options", content=text, headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text[:300]
        assert client.get("/sdapi/v1/options").json()["sdstudio_test_extension_note"] == "x\ufffdy"
    saved = json.loads(api_server.app.paths.config_file.read_text(encoding="utf-8"))
    assert saved["sdstudio_test_extension_note"] == "x\ufffdy"


def test_a_clip_skip_deeper_than_the_models_text_encoder_is_refused_naming_the_option(api_server):
    with api_server.client() as client:
        deep = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"CLIP_stop_at_last_layers": 12}})
        assert deep.status_code == 422, deep.text[:300]
        assert "CLIP_stop_at_last_layers" in deep.json()["detail"]
        assert "use 1 to" in deep.json()["detail"]
        shallow = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"CLIP_stop_at_last_layers": 2}})
        assert shallow.status_code == 200, shallow.text[:300]


@pytest.mark.parametrize("option", ["limit_request_body_mb", "model_memory_budget_mb"])
def test_a_size_option_too_large_for_a_byte_count_is_refused_and_the_server_keeps_working(api_server, option):
    text = json.dumps({option: 1e308})  # finite, but x 1e6 or x 2**20 bytes it is infinite
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/options", content=text, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text[:300]
        assert option in answer.json()["detail"]
        assert client.get("/sdapi/v1/options").status_code == 200
        assert client.get("/sdapi/v1/memory").status_code == 200, "it reports the memory budget in bytes"
        assert client.post("/sdapi/v1/txt2img", json=SMALL).status_code == 200


@pytest.mark.parametrize("limit", [str(2**63), "-1"])
def test_a_task_listing_limit_out_of_range_is_refused_naming_it(api_server, limit):
    with api_server.client() as client:
        answer = client.get("/sdapi/v1/tasks", params={"limit": limit})
        assert answer.status_code == 422, answer.text[:300]
        assert "limit" in answer.text
        assert client.get("/sdapi/v1/tasks", params={"limit": 5}).status_code == 200


@pytest.mark.parametrize(
    "route, body",
    [
        ("/controlnet/detect", {"controlnet_module": "canny", "controlnet_threshold_a": "\ud800"}),
        ("/internal/progress", {"id_task": "task(x)", "live_preview": "\ud800"}),
    ],
)
def test_a_lone_surrogate_in_a_controlnet_or_progress_body_is_a_422(api_server, route, body):
    with api_server.client() as client:
        raw = json.dumps(body).encode()  # the surrogate as the escape \ud800, as a client's JSON carries it
        answer = client.post(route, content=raw, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text[:300]
        assert client.get("/sdapi/v1/progress").status_code == 200
