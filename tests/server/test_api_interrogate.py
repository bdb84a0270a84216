"""POST /sdapi/v1/interrogate over real HTTP, with the body A1111 clients (webuiapi.interrogate) send."""

from __future__ import annotations

import pytest
from tiny_models import write_tiny_blip, write_tiny_clip_model

from sdstudio.app import open_app

from .conftest import start_server
from .test_api_extras import png_base64


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server whose data dir holds a tiny BLIP and CLIP (Hugging Face layout) and two category files."""
    root = tmp_path_factory.mktemp("interrogate") / "data"
    write_tiny_blip(root / "models" / "BLIP" / "blip-tiny")
    write_tiny_clip_model(root / "models" / "CLIP" / "clip-tiny")
    categories = root / "models" / "interrogate"
    categories.mkdir(parents=True)
    (categories / "artists.txt").write_text("Claude Monet\n", encoding="utf-8")
    (categories / "mediums.txt").write_text("a watercolor painting\n", encoding="utf-8")
    short = {"interrogate_clip_min_length": 4, "interrogate_clip_max_length": 10}  # fewer BLIP steps
    running = start_server(open_app(root, run_options={"device": "cpu", **short}))
    yield running
    running.stop()


def test_clip_interrogation_answers_a_caption_with_the_categories_appended(server):
    with server.client() as client:
        answer = client.post("/sdapi/v1/interrogate", json={"image": png_base64(40, 32), "model": "clip"})

    assert answer.status_code == 200, answer.text
    caption = answer.json()["caption"]
    suffix = ", a watercolor painting, by Claude Monet"
    assert caption.endswith(suffix) and caption[: -len(suffix)].strip(), caption


def test_unknown_model_is_a_422_naming_model(server):
    with server.client() as client:
        answer = client.post("/sdapi/v1/interrogate", json={"image": png_base64(8, 8), "model": "nope"})

    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("model:")


def test_missing_blip_is_a_404_naming_the_folder(api_server):
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/interrogate", json={"image": png_base64(8, 8), "model": "clip"})

    assert answer.status_code == 404
    assert "models/BLIP" in answer.json()["detail"]
