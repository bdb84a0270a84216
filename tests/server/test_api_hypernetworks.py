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
