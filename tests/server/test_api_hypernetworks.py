"""Hypernetworks over real HTTP: A1111's create/hypernetwork body, the listing, the tag in txt2img, errors by field."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.app import open_app

from .conftest import start_server
from .test_api_generation import A1111_TXT2IMG_BODY

# A client's body for A1111's create/hypernetwork (every argument of create_hypernetwork), sized for the bundled model.
A1111_CREATE_BODY = {
    "name": "blue-shift",
    "enable_sizes": [128, 64],
    "overwrite_old": False,
    "layer_structure": [1, 2, 1],
    "activation_func": "relu",
    "weight_init": "KaimingNormal",
    "add_layer_norm": False,
    "use_dropout": False,
    "dropout_structure": "0, 0, 0",
}


@pytest.fixture
def server(data_dir):
    running = start_server(open_app(data_dir))
    yield running
    running.stop()


def image_of(answer) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]))))


def test_create_list_and_use_a_hypernetwork(server):
    body = {**A1111_TXT2IMG_BODY, "steps": 2}
    with server.client() as client:
        assert client.get("/sdapi/v1/hypernetworks").json() == []
        created = client.post("/sdapi/v1/create/hypernetwork", json=A1111_CREATE_BODY)
        assert created.status_code == 200, created.text
        path = server.app.paths.folder("hypernetwork") / "blue-shift.pt"
        assert created.json() == {"info": f"create hypernetwork filename: {path}"}
        assert client.get("/sdapi/v1/hypernetworks").json() == [{"name": "blue-shift", "path": str(path)}]
        base = image_of(client.post("/sdapi/v1/txt2img", json=body))
        tagged = client.post("/sdapi/v1/txt2img", json={**body, "prompt": body["prompt"] + " <hypernet:blue-shift:1>"})
        again = image_of(client.post("/sdapi/v1/txt2img", json=body))
    assert not np.array_equal(image_of(tagged), base)
    assert np.array_equal(again, base)
    info = json.loads(tagged.json()["info"])
    assert "<hypernet:blue-shift:1>" in info["prompt"] and not info.get("warnings")
    saved = torch.load(path, weights_only=True)
    assert saved["activation_func"] == "relu" and saved["weight_initialization"] == "KaimingNormal"


def test_fields_left_out_take_a1111s_defaults_and_nulls_too(server):
    with server.client() as client:
        plain = client.post("/sdapi/v1/create/hypernetwork", json={"name": "plain"})
        nulls = client.post(
            "/sdapi/v1/create/hypernetwork",
            json={"name": "nulls", "layer_structure": None, "activation_func": None, "weight_init": None},
        )
    assert plain.status_code == 200 and nulls.status_code == 200, (plain.text, nulls.text)
    for name in ("plain", "nulls"):
        saved = torch.load(server.app.paths.folder("hypernetwork") / f"{name}.pt", weights_only=True)
        assert [k for k in saved if isinstance(k, int)] == [768, 320, 640, 1280]
        assert saved["layer_structure"] == [1, 2, 1] and saved["activation_func"] == "linear"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"name": None}, "name"),
        ({"name": "???"}, "name"),
        ({"layer_structure": "2, 1"}, "layer_structure"),
        ({"activation_func": "nonsense"}, "activation_func"),
        ({"weight_init": "Ones"}, "weight_init"),
        ({"enable_sizes": [0]}, "enable_sizes"),
        ({"use_dropout": True, "dropout_structure": "0, 2, 0"}, "dropout_structure"),
    ],
)
def test_a_bad_field_is_a_4xx_naming_it(server, fields, named):
    with server.client() as client:
        answer = client.post("/sdapi/v1/create/hypernetwork", json={**A1111_CREATE_BODY, **fields})
    assert 400 <= answer.status_code < 500, answer.text
    assert named in answer.json()["errors"]
    assert not list(server.app.paths.folder("hypernetwork").iterdir())


def test_a_taken_name_is_refused_unless_overwrite_old(server):
    with server.client() as client:
        first = client.post("/sdapi/v1/create/hypernetwork", json=A1111_CREATE_BODY)
        before = (server.app.paths.folder("hypernetwork") / "blue-shift.pt").read_bytes()
        taken = client.post("/sdapi/v1/create/hypernetwork", json=A1111_CREATE_BODY)
        assert (server.app.paths.folder("hypernetwork") / "blue-shift.pt").read_bytes() == before
        replaced = client.post("/sdapi/v1/create/hypernetwork", json={**A1111_CREATE_BODY, "overwrite_old": True})
    assert first.status_code == 200 and replaced.status_code == 200
    assert taken.status_code == 422 and "name" in taken.json()["errors"] and "already exists" in taken.text


def write_training_images(folder, count: int = 3):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a purple circle")


# A1111's Train hypernetwork body (every argument of train_hypernetwork but id_task), tiny sizes.
A1111_TRAIN_BODY = {
    "hypernetwork_name": "blue-shift",
    "learn_rate": "0.0005",
    "batch_size": 1,
    "gradient_step": 1,
    "data_root": "train",
    "log_directory": "textual_inversion",
    "training_width": 64,
    "training_height": 64,
    "varsize": False,
    "steps": 3,
    "clip_grad_mode": "disabled",
    "clip_grad_value": "0.1",
    "shuffle_tags": False,
    "tag_drop_out": 0,
    "latent_sampling_method": "once",
    "use_weight": False,
    "create_image_every": 0,
    "save_hypernetwork_every": 2,
    "template_filename": "hypernetwork.txt",
    "preview_from_txt2img": False,
    "preview_prompt": "",
    "preview_negative_prompt": "",
    "preview_steps": 20,
    "preview_sampler_name": "Euler a",
    "preview_cfg_scale": 7,
    "preview_seed": -1,
    "preview_width": 512,
    "preview_height": 512,
}


def test_train_on_the_queue_saves_the_steps_and_continues_from_them(server):
    write_training_images(server.app.paths.root / "train")
    path = server.app.paths.folder("hypernetwork") / "blue-shift.pt"
    with server.client() as client:
        assert client.post("/sdapi/v1/create/hypernetwork", json=A1111_CREATE_BODY).status_code == 200
        untrained = torch.load(path, weights_only=True)
        answer = client.post("/sdapi/v1/train/hypernetwork", json=A1111_TRAIN_BODY)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["info"] == f"train hypernetwork complete: filename: {path} error: None"
        assert body["steps"] == 3 and len(body["losses"]) == 3 and body["warnings"] == []
        more = client.post("/sdapi/v1/train/hypernetwork", json={**A1111_TRAIN_BODY, "steps": 4, "varsize": True})
    assert more.status_code == 200, more.text
    assert more.json()["steps"] == 4 and more.json()["losses"][:3] == body["losses"]  # continued from step 3
    assert more.json()["warnings"] == ["varsize is not supported yet and was not used"]
    trained = torch.load(path, weights_only=True)
    assert trained["step"] == 4 and not torch.equal(
        trained[128][0]["linear.0.weight"], untrained[128][0]["linear.0.weight"]
    )
    assert (path.parent / "blue-shift.pt.optim").is_file()
    assert (server.app.paths.root / "textual_inversion" / "blue-shift" / "state.json").is_file()


@pytest.mark.parametrize(
    ("fields", "named", "status"),
    [
        ({"hypernetwork_name": "nope"}, "hypernetwork_name", 404),
        ({"data_root": "missing"}, "data_root", 422),
        ({"data_root": "/etc"}, "data_root", 422),
        ({"batch_size": 10**6}, "batch_size", 422),
        ({"learn_rate": "0.005:100, 1e-5:1000"}, "learn_rate", 422),
        ({"learn_rate": "nan"}, "learn_rate", 422),
        ({"training_height": 32}, "training_height", 422),
        ({"steps": 0}, "steps", 422),
        ({"log_directory": "../../outside"}, "log_directory", 422),
    ],
)
def test_a_bad_training_field_is_a_4xx_naming_it(server, fields, named, status):
    write_training_images(server.app.paths.root / "train", count=1)
    with server.client() as client:
        assert client.post("/sdapi/v1/create/hypernetwork", json=A1111_CREATE_BODY).status_code == 200
        answer = client.post("/sdapi/v1/train/hypernetwork", json={**A1111_TRAIN_BODY, **fields})
    assert answer.status_code == status, answer.text
    assert named in answer.json()["errors"]
    assert torch.load(server.app.paths.folder("hypernetwork") / "blue-shift.pt", weights_only=True)["step"] == 0


def test_a_hypernetwork_for_another_model_is_refused_naming_it(server):
    write_training_images(server.app.paths.root / "train", count=1)
    with server.client() as client:
        created = client.post("/sdapi/v1/create/hypernetwork", json={**A1111_CREATE_BODY, "enable_sizes": [768]})
        assert created.status_code == 200
        answer = client.post("/sdapi/v1/train/hypernetwork", json=A1111_TRAIN_BODY)
    assert answer.status_code == 422 and "hypernetwork_name" in answer.json()["errors"], answer.text
