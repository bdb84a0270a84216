"""A1111's admin routes over real HTTP: refresh-embeddings, realesrgan-models, server-stop/-restart/-kill."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from sdstudio.app import open_app
from sdstudio.server.app import ServerOptions

from .conftest import ServeProcess, start_server, wait_until_sampling

REPO = Path(__file__).resolve().parents[2]
SERVER_CONTROL_ROUTES = ("server-stop", "server-restart", "server-kill")
# A1111's own txt2img fields (webuiapi sends these), tiny sizes, the bundled model.
TXT2IMG = {
    "prompt": "a glowstyle house",
    "negative_prompt": "",
    "seed": 3,
    "sampler_name": "Euler a",
    "steps": 2,
    "cfg_scale": 7,
    "width": 64,
    "height": 64,
    "batch_size": 1,
    "n_iter": 1,
    "override_settings": {"sd_model_checkpoint": "sdstudio-tiny"},
    "send_images": True,
    "save_images": False,
}


def infotext(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    return json.loads(answer.json()["info"])["infotexts"][0]


def test_refresh_embeddings_makes_an_embedding_copied_after_start_usable(api_server):
    import torch
    from safetensors.torch import save_file

    from sdstudio.models.hashes import sha256_of_file

    with api_server.client() as client:
        assert "TI hashes" not in infotext(client.post("/sdapi/v1/txt2img", json=TXT2IMG))  # the model is loaded now
        copied = api_server.app.paths.folder("embedding") / "glowstyle.safetensors"
        # 128 wide, as the bundled model's text encoder.
        save_file({"emb_params": torch.randn(2, 128, generator=torch.Generator().manual_seed(3))}, str(copied))

        refreshed = client.post("/sdapi/v1/refresh-embeddings")
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json() is None  # A1111's answer
        listed = client.get("/sdapi/v1/embeddings").json()
        assert listed["loaded"]["glowstyle"]["vectors"] == 2
        used = infotext(client.post("/sdapi/v1/txt2img", json=TXT2IMG))
    assert f'TI hashes: "glowstyle: {sha256_of_file(copied)[:12]}"' in used


def test_realesrgan_models_lists_the_model_files_in_the_realesrgan_folder(data_dir):
    from postprocess.postprocess_networks import save_compact, save_esrgan

    realesrgan = save_compact(data_dir / "models" / "RealESRGAN" / "realesr-general-x4v3.pth", scale=4)
    save_compact(data_dir / "models" / "RealESRGAN" / "my-2x.pth", scale=2)
    save_esrgan(data_dir / "models" / "ESRGAN" / "4x-other.pth")  # an upscaler, but not a RealESRGAN one
    (data_dir / "models" / "RealESRGAN" / "broken.pth").write_bytes(b"not a model")
    running = start_server(open_app(data_dir))
    try:
        with running.client() as client:
            answer = client.get("/sdapi/v1/realesrgan-models")
    finally:
        running.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json() == [
        {"name": "my-2x", "path": str(data_dir / "models" / "RealESRGAN" / "my-2x.pth"), "scale": 2},
        {"name": "R-ESRGAN General 4xV3", "path": str(realesrgan), "scale": 4},
    ]


def test_server_control_routes_are_absent_without_the_flag_and_the_server_keeps_serving(api_server):
    with api_server.client() as client:
        for route in SERVER_CONTROL_ROUTES:
            assert client.post(f"/sdapi/v1/{route}").status_code == 404, route
        flags = client.get("/sdapi/v1/cmd-flags")
    assert flags.status_code == 200 and flags.json()["api_server_stop"] is False
    assert api_server.thread.is_alive()


def test_server_stop_asks_for_the_api_credentials(data_dir):
    running = start_server(open_app(data_dir), ServerOptions(api_auth="alice:s3cret", api_server_stop=True))
    try:
        with running.client() as client:
            refused = client.post("/sdapi/v1/server-stop")
            assert refused.status_code == 401
            assert client.get("/sdapi/v1/cmd-flags", auth=("alice", "s3cret")).json()["api_server_stop"] is True
            stopped = client.post("/sdapi/v1/server-stop", auth=("alice", "s3cret"))
        assert stopped.status_code == 200 and stopped.text == "Stopping."
        running.thread.join(30)
        assert not running.thread.is_alive(), "the server shut down"
    finally:
        running.stop()


def test_server_kill_interrupts_the_running_job_and_ends_the_server(data_dir):
    running = start_server(open_app(data_dir), ServerOptions(api_server_stop=True))
    outcome: dict = {}

    def long_job():
        with running.client() as other:
            outcome["answer"] = other.post("/sdapi/v1/txt2img", json={**TXT2IMG, "steps": 400})

    job = threading.Thread(target=long_job)
    try:
        with running.client() as client:
            job.start()
            wait_until_sampling(client)
            running_job = running.queue.current
            killed = client.post("/sdapi/v1/server-kill")
        assert killed.status_code == 200
        job.join(60)
        running.thread.join(30)
        assert not running.thread.is_alive(), "the server shut down"
        answer = outcome["answer"]
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.json()["info"])["steps"] == 400  # the interrupted job's answer got out
        assert running_job is not None and running_job.cancel.interrupted
    finally:
        running.stop()


@pytest.fixture
def serve_process(data_dir, tmp_path):
    process = ServeProcess(data_dir, tmp_path / "serve.log", "--api-server-stop")
    yield process
    process.stop()


def test_server_restart_runs_again_in_the_same_process_and_server_stop_exits_0(serve_process):
    serve_process.wait_ready()
    restarted = httpx.post(f"{serve_process.url}/sdapi/v1/server-restart", timeout=60)
    assert restarted.status_code == 200 and restarted.text == "Restarting."
    serve_process.wait_ready(times=2)  # exec keeps the pid, so it is the same Popen still running
    assert httpx.get(f"{serve_process.url}/sdapi/v1/cmd-flags", timeout=60).json()["api_server_stop"] is True

    stopped = httpx.post(f"{serve_process.url}/sdapi/v1/server-stop", timeout=60)
    assert stopped.status_code == 200 and stopped.text == "Stopping."
    assert serve_process.process.wait(60) == 0, serve_process.log()
    assert not serve_process.port_open()
