"""API endpoints that need no model: options, progress, auth, errors, docs."""

from __future__ import annotations

import json

from sdstudio.app import open_app
from sdstudio.engine.job_queue import JobQueue
from sdstudio.server.app import ServerOptions, create_api

from .conftest import start_server


def test_options_round_trip_and_persist(api_server):
    with api_server.client() as client:
        options = client.get("/sdapi/v1/options").json()
        assert options["samples_format"] == "png"
        assert (
            client.post("/sdapi/v1/options", json={"samples_format": "webp", "extension_option": 7}).status_code == 200
        )
        assert client.get("/sdapi/v1/options").json()["samples_format"] == "webp"
    saved = json.loads(api_server.app.paths.config_file.read_text())
    assert saved["samples_format"] == "webp" and saved["extension_option"] == 7


def test_bad_option_is_422_naming_it_and_server_keeps_serving(api_server):
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": "many"})
        assert answer.status_code == 422
        body = answer.json()
        assert set(body) >= {"error", "detail", "errors"}
        assert "CLIP_stop_at_last_layers" in body["errors"]
        assert client.get("/sdapi/v1/progress").status_code == 200


def test_run_flag_is_not_saved_by_a_later_options_post(data_dir):
    """`serve --precision bf16` holds for the run; saving another option must not write it."""
    running = start_server(open_app(data_dir, run_options={"precision": "bf16", "no_half_vae": True}))
    try:
        with running.client() as client:
            assert client.get("/sdapi/v1/options").json()["precision"] == "bf16"
            assert client.post("/sdapi/v1/options", json={"jpeg_quality": 90}).status_code == 200
            assert client.get("/sdapi/v1/options").json()["precision"] == "bf16"
    finally:
        running.stop()
    saved = json.loads((data_dir / "config.json").read_text())
    assert saved["jpeg_quality"] == 90
    assert saved["precision"] == "auto" and saved["no_half_vae"] is False


def test_output_folder_outside_the_data_dir_is_refused_and_not_saved(api_server, tmp_path):
    outside = tmp_path / "elsewhere"
    with api_server.client() as client:
        for value in (str(outside), "../../elsewhere", "outputs/../../elsewhere"):
            answer = client.post("/sdapi/v1/options", json={"outdir_txt2img_samples": value, "jpeg_quality": 10})
            assert answer.status_code == 422, value
            assert "outdir_txt2img_samples" in answer.json()["errors"]
        options = client.get("/sdapi/v1/options").json()
        assert options["outdir_txt2img_samples"] == "outputs/txt2img-images" and options["jpeg_quality"] == 80
    assert (
        not api_server.app.paths.config_file.exists() or "elsewhere" not in api_server.app.paths.config_file.read_text()
    )
    assert not outside.exists()


def test_idle_progress_and_controls(api_server):
    with api_server.client() as client:
        progress = client.get("/sdapi/v1/progress").json()
        assert progress["progress"] == 0 and progress["state"]["job_count"] == 0
        assert client.post("/sdapi/v1/interrupt").status_code == 200
        assert client.post("/sdapi/v1/skip").status_code == 200
        assert client.get("/sdapi/v1/memory").json()["ram"]["total"] > 0
        scripts = client.get("/sdapi/v1/scripts").json()  # the built-in ones only
        assert "x/y/z plot" in scripts["txt2img"] and "x/y/z plot" in scripts["img2img"]
        assert {"loopback", "sd upscale"} <= set(scripts["img2img"]) and "loopback" not in scripts["txt2img"]
        assert client.get("/sdapi/v1/extensions").json() == []
        assert "listen" in client.get("/sdapi/v1/cmd-flags").json()
        assert client.get("/docs").status_code == 200
        assert "/sdapi/v1/progress" in client.get("/openapi.json").json()["paths"]


def test_api_auth(data_dir):
    server = start_server(open_app(data_dir), ServerOptions(api_auth="alice:s3cret,bob:pw"))
    try:
        with server.client() as client:
            assert client.get("/sdapi/v1/options").status_code == 401
            assert client.get("/sdapi/v1/options", auth=("alice", "wrong")).status_code == 401
            assert client.get("/sdapi/v1/options", auth=("mallory", "s3cret")).status_code == 401
            assert client.get("/sdapi/v1/options", auth=("alice", "s3cret")).status_code == 200
            assert client.get("/sdapi/v1/options", auth=("bob", "pw")).status_code == 200
    finally:
        server.stop()


# Every A1111 endpoint sdstudio serves, by method: what clients (and /docs) rely on finding.
A1111_ENDPOINTS = {
    "get": [
        "cmd-flags",
        "embeddings",
        "extensions",
        "face-restorers",
        "hypernetworks",
        "latent-upscale-modes",
        "loras",
        "memory",
        "options",
        "progress",
        "prompt-styles",
        "realesrgan-models",
        "samplers",
        "schedulers",
        "script-info",
        "scripts",
        "sd-models",
        "sd-vae",
        "upscalers",
    ],
    "post": [
        "create/hypernetwork",
        "extra-batch-images",
        "extra-single-image",
        "img2img",
        "create/embedding",
        "interrogate",
        "interrupt",
        "merge-checkpoints",
        "options",
        "png-info",
        "refresh-checkpoints",
        "refresh-embeddings",
        "refresh-loras",
        "refresh-vae",
        "reload-checkpoint",
        "skip",
        "train/hypernetwork",
        "train/embedding",
        "txt2img",
        "unload-checkpoint",
    ],
}


# The task API (sdstudio's persistent queue) and A1111's /internal/progress for a task id.
TASK_ENDPOINTS = {
    ("get", "/sdapi/v1/tasks"),
    ("delete", "/sdapi/v1/tasks"),
    ("post", "/sdapi/v1/tasks/txt2img"),
    ("post", "/sdapi/v1/tasks/img2img"),
    ("post", "/sdapi/v1/tasks/pause"),
    ("post", "/sdapi/v1/tasks/resume"),
    ("get", "/sdapi/v1/tasks/{task_id}"),
    ("get", "/sdapi/v1/tasks/{task_id}/images/{index}"),
    ("post", "/sdapi/v1/tasks/{task_id}/cancel"),
    ("post", "/sdapi/v1/tasks/{task_id}/requeue"),
    ("post", "/internal/progress"),
    ("get", "/internal/progress"),
}

# sd-webui-controlnet's API, served from the root as it is.
CONTROLNET_ENDPOINTS = {
    ("get", "/controlnet/version"),
    ("get", "/controlnet/model_list"),
    ("get", "/controlnet/module_list"),
    ("get", "/controlnet/settings"),
    ("get", "/controlnet/control_types"),
    ("post", "/controlnet/detect"),
}


def test_openapi_lists_every_a1111_endpoint_and_auth_guards_each(data_dir):
    app = open_app(data_dir)
    expected = {(method, f"/sdapi/v1/{name}") for method, names in A1111_ENDPOINTS.items() for name in names}
    expected |= TASK_ENDPOINTS | CONTROLNET_ENDPOINTS
    open_paths = create_api(app, JobQueue()).openapi()["paths"]
    assert {(method, path) for path, ops in open_paths.items() for method in ops} == expected
    # --api-server-stop adds A1111's server-kill/-restart/-stop, guarded like the rest.
    guarded_options = ServerOptions(api_auth="alice:s3cret", api_server_stop=True)
    guarded_paths = create_api(app, JobQueue(), guarded_options).openapi()["paths"]
    server_control = {("post", f"/sdapi/v1/{name}") for name in ("server-kill", "server-restart", "server-stop")}
    assert {(method, path) for path, ops in guarded_paths.items() for method in ops} == expected | server_control
    unguarded = [
        (method, path)
        for path, ops in guarded_paths.items()
        for method, op in ops.items()
        if op.get("security") != [{"HTTPBasic": []}]
    ]
    assert unguarded == [], "with --api-auth every endpoint asks for credentials"


def test_checkpoint_or_vae_outside_the_data_dir_is_refused_and_not_opened(api_server, tmp_path):
    """A settings value names a model in the data dir; a path to a file elsewhere is a 422, before any read."""
    outside = tmp_path / "elsewhere" / "model.safetensors"
    outside.parent.mkdir()
    outside.write_bytes(b"not read")
    with api_server.client() as client:
        for option, value in (
            ("sd_model_checkpoint", str(outside)),
            ("sd_vae", str(outside)),
            ("sd_model_checkpoint", "../../elsewhere/model.safetensors"),
            ("sd_vae", "~/model.pt"),
        ):
            answer = client.post("/sdapi/v1/options", json={option: value})
            assert answer.status_code == 422, (option, value, answer.text)
            assert option in answer.json()["errors"]
        body = {
            "prompt": "x",
            "steps": 1,
            "width": 64,
            "height": 64,
            "override_settings": {"sd_model_checkpoint": str(outside)},
        }
        answer = client.post("/sdapi/v1/txt2img", json=body)
        assert answer.status_code == 422 and "sd_model_checkpoint" in answer.json()["errors"]
        options = client.get("/sdapi/v1/options").json()
        assert options["sd_model_checkpoint"] == "" and options["sd_vae"] == "Automatic"
