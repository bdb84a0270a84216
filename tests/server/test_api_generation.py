"""Generation over real HTTP: A1111 bodies in, A1111 answers out, one queue, nothing lost."""

from __future__ import annotations

import base64
import io
import json
import threading

import pytest
from PIL import Image

from sdstudio.app import open_app

from .conftest import start_server, wait_until_sampling

# A body as A1111's docs and common clients send it: every field, some unknown to sdstudio.
A1111_TXT2IMG_BODY = {
    "prompt": "a red circle on a blue background",
    "negative_prompt": "",
    "styles": [],
    "seed": 1234,
    "subseed": -1,
    "subseed_strength": 0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "sampler_name": "Euler a",
    "scheduler": "Automatic",
    "batch_size": 1,
    "n_iter": 1,
    "steps": 3,
    "cfg_scale": 7,
    "width": 64,
    "height": 64,
    "restore_faces": False,
    "tiling": False,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "eta": 0,
    "denoising_strength": 0,
    "s_min_uncond": 0,
    "s_churn": 0,
    "s_tmax": 0,
    "s_tmin": 0,
    "s_noise": 1,
    "override_settings": {},
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": "",
    "refiner_switch_at": 0,
    "disable_extra_networks": False,
    "firstpass_image": "",
    "comments": {},
    "enable_hr": False,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2,
    "hr_upscaler": "",
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": "",
    "hr_sampler_name": "",
    "hr_scheduler": "",
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "force_task_id": "",
    "sampler_index": "Euler",
    "script_name": "",
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "infotext": "",
    "token_merging_ratio": 0,
    "some_future_field": {"x": 1},
}


@pytest.fixture
def server(data_dir_with_model):
    running = start_server(open_app(data_dir_with_model))
    yield running
    running.stop()


def png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def txt2img(client, **changes):
    answer = client.post("/sdapi/v1/txt2img", json={**A1111_TXT2IMG_BODY, **changes})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a1111_body_gives_a1111_answer_and_is_deterministic(server):
    with server.client() as client:
        first = txt2img(client)
        second = txt2img(client)
    assert set(first) == {"images", "parameters", "info"}
    info = json.loads(first["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234] and info["sampler_name"] == "Euler a"
    assert info["width"] == 64 and info["height"] == 64 and len(info["infotexts"]) == 1
    assert first["parameters"]["prompt"] == A1111_TXT2IMG_BODY["prompt"]
    image = png(first["images"][0])
    assert image.size == (64, 64)
    assert "Seed: 1234" in image.info["parameters"]
    assert first["images"] == second["images"], "same request, same image"
    assert not list((server.app.paths.outputs).rglob("*.png")), "save_images=false writes nothing"


def test_save_images_and_send_images_are_honoured(server):
    with server.client() as client:
        answer = txt2img(client, save_images=True, send_images=False, seed=7)
    assert answer["images"] == []
    saved = list((server.app.paths.outputs / "txt2img-images").rglob("*.png"))
    assert len(saved) == 1 and "-7-" in saved[0].name


def test_bad_input_is_422_naming_the_field_and_the_server_keeps_serving(server):
    with server.client() as client:
        for field, value in (("width", 63), ("steps", -1), ("sampler_name", "Nope"), ("cfg_scale", "x")):
            answer = client.post("/sdapi/v1/txt2img", json={**A1111_TXT2IMG_BODY, field: value})
            assert answer.status_code == 422, (field, answer.text)
            assert field in answer.json()["errors"]
        bad_image = client.post(
            "/sdapi/v1/img2img",
            json={"prompt": "x", "init_images": ["not base64!!"], "steps": 2, "width": 64, "height": 64},
        )
        assert bad_image.status_code == 422 and "init_images" in bad_image.json()["errors"]
        assert txt2img(client)["images"]


def test_concurrent_clients_all_complete_with_their_seeds(server):
    results: dict[int, dict] = {}
    errors: list[str] = []

    def client_run(index: int) -> None:
        try:
            with server.client() as client:
                for round_ in range(2):
                    seed = 100 + index * 10 + round_
                    answer = client.post("/sdapi/v1/txt2img", json={**A1111_TXT2IMG_BODY, "seed": seed, "steps": 1})
                    results[seed] = answer.json() if answer.status_code == 200 else {"error": answer.text}
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client_run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors
    assert len(results) == 16
    for seed, answer in results.items():
        assert json.loads(answer["info"])["seed"] == seed, answer


def test_img2img_png_info_and_listings(server):
    with server.client() as client:
        generated = txt2img(client)["images"][0]
        answer = client.post(
            "/sdapi/v1/img2img",
            json={
                "prompt": "a green square",
                "init_images": ["data:image/png;base64," + generated],
                "denoising_strength": 0.5,
                "steps": 2,
                "width": 64,
                "height": 64,
                "seed": 5,
            },
        )
        assert answer.status_code == 200, answer.text
        assert png(answer.json()["images"][0]).size == (64, 64)
        info = client.post("/sdapi/v1/png-info", json={"image": generated}).json()
        assert "Seed: 1234" in info["info"] and str(info["parameters"]["Seed"]) == "1234"
        models = client.get("/sdapi/v1/sd-models").json()
        assert models[0]["model_name"] == "random-tiny" and models[0]["title"].startswith("random-tiny.safetensors [")
        samplers = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
        assert {"Euler a", "DPM++ 2M", "UniPC", "DDIM", "LCM"} <= set(samplers)
        assert [s["label"] for s in client.get("/sdapi/v1/schedulers").json()][:3] == ["Automatic", "Uniform", "Karras"]
        assert {u["name"] for u in client.get("/sdapi/v1/upscalers").json()} >= {"None", "Lanczos", "Nearest"}
        assert "Latent (nearest)" in [m["name"] for m in client.get("/sdapi/v1/latent-upscale-modes").json()]
        for path in ("sd-vae", "face-restorers", "prompt-styles", "loras"):
            assert client.get(f"/sdapi/v1/{path}").status_code == 200, path
        assert set(client.get("/sdapi/v1/embeddings").json()) == {"loaded", "skipped"}
        for path in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "unload-checkpoint", "reload-checkpoint"):
            assert client.post(f"/sdapi/v1/{path}").status_code == 200, path
        switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "random-tiny"})
        assert switched.status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("random-tiny.safetensors [")
        missing = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"})
        assert missing.status_code == 404 and "nope" in missing.json()["errors"]


def test_interrupt_stops_a_long_job_and_the_next_one_runs(server):
    with server.client() as client:
        outcome: dict = {}

        def long_job():
            with server.client() as other:
                outcome["answer"] = other.post("/sdapi/v1/txt2img", json={**A1111_TXT2IMG_BODY, "steps": 400})

        thread = threading.Thread(target=long_job)
        thread.start()
        wait_until_sampling(client)
        assert client.post("/sdapi/v1/interrupt").status_code == 200
        thread.join(60)
        answer = outcome["answer"]
        assert answer.status_code == 200
        assert json.loads(answer.json()["info"])  # the partial result is still an A1111 answer
        after = client.get("/sdapi/v1/progress").json()
        assert after["state"]["job_count"] == 0
        assert txt2img(client)["images"], "the server keeps serving after an interrupt"
