"""A setting is checked before it is saved: no saved value makes later jobs or GET /options fail (#19, class 2)."""

from __future__ import annotations

import json

from tiny_models import write_tiny_checkpoint

from sdstudio.app import open_app

from .conftest import start_server

JOB = {"prompt": "a red circle", "seed": 1, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}

# (option, value) pairs seen saved over POST /options, each failing every later job or GET /options.
BAD_OPTIONS = [
    ("device", "banana"),
    ("device", "cuda:99"),
    ("device_id", 7),
    ("samples_format", "../../x"),
    ("grid_format", "exe"),
    ("CLIP_stop_at_last_layers", 40),
    ("CLIP_stop_at_last_layers", 0),
    ("jpeg_quality", 1000),
    ("code_former_weight", float("nan")),
    ("s_noise", float("inf")),
    ("eta_noise_seed_delta", 2**70),
    ("some_extension_option", {"nested": float("nan")}),
    ("outdir_txt2img_samples", "outputs/afile"),
    ("outdir_txt2img_samples", "outputs/afile/below"),
    ("outdir_samples", "config.json"),
    ("outdir_txt2img_grids", "/proc/self"),
]


def post_json(client, path: str, body: dict):
    """POST a body as Python's json writes it: NaN and Infinity as the bare words A1111 clients send."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def test_bad_option_is_422_naming_it_nothing_saved_and_jobs_still_run(data_dir_with_model):
    data_dir = data_dir_with_model
    running = start_server(open_app(data_dir))
    (data_dir / "outputs" / "afile").write_text("a file where a folder was asked for")
    try:
        with running.client() as client:
            assert client.post("/sdapi/v1/options", json={"jpeg_quality": 90}).status_code == 200
            saved = (data_dir / "config.json").read_text()
            for option, value in BAD_OPTIONS:
                answer = post_json(client, "/sdapi/v1/options", {option: value, "eta_ddim": 0.5})
                assert answer.status_code == 422, (option, value, answer.text)
                assert option in answer.json()["errors"], (option, answer.text)
                assert client.get("/sdapi/v1/options").status_code == 200, option
                assert (data_dir / "config.json").read_text() == saved, f"{option} was saved"
                answer = post_json(client, "/sdapi/v1/txt2img", {**JOB, "override_settings": {option: value}})
                assert answer.status_code == 422, (option, value, answer.text)
                assert "override_settings" in answer.json()["errors"] and option in answer.json()["errors"]
            assert client.post("/sdapi/v1/txt2img", json=JOB).status_code == 200
            assert client.get("/sdapi/v1/options").json()["jpeg_quality"] == 90
    finally:
        running.stop()


def test_restart_over_a_config_holding_bad_values_starts_with_defaults_and_notices(data_dir_with_model):
    data_dir = data_dir_with_model
    (data_dir / "outputs").mkdir()
    (data_dir / "outputs" / "afile").write_text("x")
    saved = {
        "code_former_weight": float("nan"),
        "s_noise": float("-inf"),
        "device": "cuda:99",
        "samples_format": "../../x",
        "CLIP_stop_at_last_layers": 40,
        "outdir_txt2img_samples": "outputs/afile",
        "jpeg_quality": 70,
    }
    (data_dir / "config.json").write_text(json.dumps(saved))
    running = start_server(open_app(data_dir))
    try:
        for option in saved.keys() - {"jpeg_quality"}:
            assert any(f"option {option}:" in notice for notice in running.app.notices), option
        with running.client() as client:
            answer = client.get("/sdapi/v1/options")
            assert answer.status_code == 200
            options = answer.json()
            assert options["code_former_weight"] == 0.5 and options["s_noise"] == 1.0
            assert options["device"] == "auto" and options["samples_format"] == "png"
            assert options["CLIP_stop_at_last_layers"] == 1 and options["jpeg_quality"] == 70
            assert options["outdir_txt2img_samples"] == "outputs/txt2img-images"
            assert client.post("/sdapi/v1/txt2img", json=JOB).status_code == 200
    finally:
        running.stop()


def test_checkpoint_that_cannot_be_loaded_is_not_selected(data_dir):
    """A1111 loads the checkpoint when the option changes and keeps the old one when that fails."""
    folder = data_dir / "models" / "Stable-diffusion"
    good = write_tiny_checkpoint(folder, "model.safetensors")
    data = good.read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    running = start_server(open_app(data_dir))
    try:
        with running.client() as client:
            assert (
                client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "model.safetensors"}).status_code == 200
            )
            selected = client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
            saved = (data_dir / "config.json").read_text()
            answer = client.post(
                "/sdapi/v1/options", json={"sd_model_checkpoint": "truncated.safetensors", "jpeg_quality": 10}
            )
            assert answer.status_code == 422, answer.text
            assert "sd_model_checkpoint" in answer.json()["errors"]
            assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == selected
            assert (data_dir / "config.json").read_text() == saved
            assert client.post("/sdapi/v1/txt2img", json=JOB).status_code == 200
    finally:
        running.stop()
