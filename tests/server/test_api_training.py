"""The Train API over real HTTP with A1111 bodies: create and train embeddings on the queue, 4xx naming fields."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from sdstudio.app import open_app
from sdstudio.prompts.embeddings import load_embedding_file

from .conftest import start_server, wait_until_sampling

# What A1111's Train tab sends (train_embedding's parameters, its UI's defaults), sized for the bundled model.
A1111_TRAIN_BODY = {
    "id_task": "task(train-1)",
    "embedding_name": "purp",
    "learn_rate": "0.005",
    "batch_size": 1,
    "gradient_step": 1,
    "data_root": "train-images",
    "log_directory": "textual_inversion",
    "training_width": 64,
    "training_height": 64,
    "varsize": False,
    "steps": 2,
    "clip_grad_mode": "disabled",
    "clip_grad_value": "0.1",
    "shuffle_tags": False,
    "tag_drop_out": 0,
    "latent_sampling_method": "once",
    "use_weight": False,
    "create_image_every": 2,
    "save_embedding_every": 2,
    "template_filename": "subject_filewords.txt",
    "save_image_with_stored_embedding": True,
    "preview_from_txt2img": False,
    "preview_prompt": "",
    "preview_negative_prompt": "",
    "preview_steps": 2,
    "preview_sampler_name": "Euler",
    "preview_cfg_scale": 7,
    "preview_seed": -1,
    "preview_width": 64,
    "preview_height": 64,
}
A1111_CREATE_BODY = {"name": "purp", "num_vectors_per_token": 2, "overwrite_old": False, "init_text": "red"}


def write_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        pixels = np.full((64, 64, 3), 245, dtype=np.uint8)
        pixels[16 + i : 40 + i, 20:44] = (140, 40, 200)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("square, white background")


@pytest.fixture
def server(data_dir):
    write_images(data_dir / "train-images")
    running = start_server(open_app(data_dir))
    yield running
    running.stop()


def test_create_train_and_use_an_embedding(server, data_dir):
    with server.client() as client:
        created = client.post("/sdapi/v1/create/embedding", json=A1111_CREATE_BODY)
        assert created.status_code == 200, created.text
        path = data_dir / "embeddings" / "purp.pt"
        assert created.json()["info"] == f"create embedding filename: {path}"
        preview = {"preview_from_txt2img": True, "preview_prompt": "a purp square", "preview_steps": 2}
        trained = client.post("/sdapi/v1/train/embedding", json={**A1111_TRAIN_BODY, **preview})
        assert trained.status_code == 200, trained.text
        assert trained.json()["info"] == f"train embedding complete: filename: {path} error: None"
        assert load_embedding_file(path).step == 2
        listed = client.get("/sdapi/v1/embeddings").json()["loaded"]
        assert listed["purp"]["vectors"] == 2 and listed["purp"]["step"] == 2
        logs = list((data_dir / "textual_inversion").glob("*/purp"))
        assert len(logs) == 1 and (logs[0] / "images" / "purp-2.png").is_file()
        assert load_embedding_file(logs[0] / "image_embeddings" / "purp-2.png").name == "purp-2"
        body = {"prompt": "a purp square", "seed": 1, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}
        generated = client.post("/sdapi/v1/txt2img", json=body)
        assert generated.status_code == 200, generated.text
        assert "purp" in json.loads(generated.json()["info"])["infotexts"][0]  # TI hashes name it


def test_training_reports_progress_and_an_interrupted_run_continues(server, data_dir):
    with server.client() as client:
        assert client.post("/sdapi/v1/create/embedding", json=A1111_CREATE_BODY).status_code == 200
        body = {**A1111_TRAIN_BODY, "steps": 100000, "create_image_every": 0, "save_embedding_every": 0}
        answers = []

        def train() -> None:
            with server.client() as own:
                answers.append(own.post("/sdapi/v1/train/embedding", json=body))

        thread = threading.Thread(target=train)
        thread.start()
        assert wait_until_sampling(client, step=2)["sampling_steps"] == 100000
        assert client.get("/sdapi/v1/progress").json()["textinfo"].startswith("Loss: ")
        assert client.post("/sdapi/v1/interrupt").status_code == 200
        thread.join(120)
        answer = answers[0].json()
        assert answer["interrupted"] and answer["step"] >= 2
        stopped = load_embedding_file(data_dir / "embeddings" / "purp.pt").step
        assert stopped == answer["step"]
        resumed = client.post("/sdapi/v1/train/embedding", json={**body, "steps": stopped + 1})
        assert resumed.status_code == 200 and resumed.json()["step"] == stopped + 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"embedding_name": "missing"}, "embedding_name"),
        ({"data_root": "/etc"}, "data_root"),
        ({"data_root": "no-such-folder"}, "data_root"),
        ({"log_directory": "../outside"}, "log_directory"),
        ({"learn_rate": "0.005:1, fast"}, "learn_rate"),
        ({"template_filename": "nope.txt"}, "template_filename"),
        ({"latent_sampling_method": "sometimes"}, "latent_sampling_method"),
        ({"batch_size": 0}, "batch_size"),
        ({"preview_sampler_name": "No Such Sampler"}, "preview_sampler_name"),
    ],
)
def test_bad_train_bodies_are_4xx_naming_the_field(server, changes, field):
    with server.client() as client:
        assert client.post("/sdapi/v1/create/embedding", json=A1111_CREATE_BODY).status_code == 200
        answer = client.post("/sdapi/v1/train/embedding", json={**A1111_TRAIN_BODY, **changes})
    assert 400 <= answer.status_code < 500, answer.text
    assert field in json.dumps(answer.json()["detail"]), answer.text


def test_create_refuses_a_taken_name_and_bad_vector_counts(server):
    with server.client() as client:
        assert client.post("/sdapi/v1/create/embedding", json=A1111_CREATE_BODY).status_code == 200
        again = client.post("/sdapi/v1/create/embedding", json=A1111_CREATE_BODY)
        assert again.status_code == 422 and again.json()["detail"].startswith("name: ")
        assert client.post("/sdapi/v1/create/embedding", json={**A1111_CREATE_BODY, "overwrite_old": True}).is_success
        zero = client.post(
            "/sdapi/v1/create/embedding", json={**A1111_CREATE_BODY, "name": "b", "num_vectors_per_token": 0}
        )
        assert zero.status_code == 422 and "num_vectors_per_token" in zero.text
        nameless = client.post("/sdapi/v1/create/embedding", json={**A1111_CREATE_BODY, "name": "//"})
        assert nameless.status_code == 422 and "name" in nameless.text
