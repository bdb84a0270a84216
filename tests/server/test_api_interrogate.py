"""POST /sdapi/v1/interrogate over real HTTP, with the body A1111 clients (webuiapi.interrogate) send."""

from __future__ import annotations

import pytest
from malicious_files import write_malicious
from tiny_models import (
    tiny_blip_captioner,
    tiny_openai_clip,
    write_blip_folder,
    write_clip_folder,
    write_openai_clip_archive,
    write_salesforce_blip,
    write_tiny_blip,
    write_tiny_clip_model,
)

from sdstudio.app import open_app
from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.postprocess.interrogate import Interrogator
from sdstudio.prompts.tokenizer import clip_tokenizer

from .conftest import start_server
from .test_api_extras import decoded, png_base64

SHORT = {"interrogate_clip_min_length": 4, "interrogate_clip_max_length": 10}  # fewer BLIP steps


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
    running = start_server(open_app(root, run_options={"device": "cpu", **SHORT}))
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


def test_missing_blip_is_a_404_naming_the_folder_and_files(api_server):
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/interrogate", json={"image": png_base64(8, 8), "model": "clip"})

    assert answer.status_code == 404
    assert "models/BLIP" in answer.json()["detail"]
    assert "model_base_caption_capfilt_large.pth" in answer.json()["detail"]


def write_categories(root) -> None:
    (root / "models" / "interrogate").mkdir(parents=True)
    (root / "models" / "interrogate" / "flavors.top2.txt").write_text("soft light\nfilm grain\nbokeh\n")


@pytest.fixture(scope="module")
def a1111_files(tmp_path_factory):
    """A data dir with A1111's own files (Salesforce BLIP .pth, OpenAI CLIP TorchScript .pt) and one with the
    Hugging Face models they were written from."""
    root = tmp_path_factory.mktemp("interrogate-a1111")
    blip, clip = tiny_blip_captioner(seed=5), tiny_openai_clip(seed=6)
    a1111, reference = root / "a1111", root / "reference"
    write_salesforce_blip(a1111 / "models" / "BLIP" / "model_base_caption_capfilt_large.pth", blip)
    write_openai_clip_archive(a1111 / "models" / "CLIP" / "ViT-L-14.pt", clip)
    write_blip_folder(reference / "models" / "BLIP" / "blip", blip)
    write_clip_folder(reference / "models" / "CLIP" / "clip", clip)
    for data in (a1111, reference):
        write_categories(data)
    return a1111, reference


def test_a1111_files_caption_and_rank_as_the_models_they_came_from(a1111_files):
    a1111, reference = a1111_files
    options = {"device": "cpu", "interrogate_return_ranks": True, **SHORT}
    image = png_base64(40, 32, "blue")
    running = start_server(open_app(a1111, run_options=options))
    try:
        with running.client() as client:
            answer = client.post("/sdapi/v1/interrogate", json={"image": image, "model": "clip"})
    finally:
        running.stop()

    paths = DataPaths(reference)
    expected = Interrogator(
        paths, SettingsStore(paths, Settings(**options)), clip_tokenizer=lambda: clip_tokenizer("sd1")
    ).interrogate(decoded(image).convert("RGB"), "clip")
    assert answer.status_code == 200, answer.text
    assert answer.json()["caption"] == expected and expected.count("(") == 2, (answer.json(), expected)


def test_blip_file_asking_for_a_forbidden_global_is_a_422_and_nothing_runs(tmp_path):
    data, marker = tmp_path / "data", tmp_path / "ran"
    write_malicious(data / "models" / "BLIP" / "model_base_caption_capfilt_large.pth", marker, "zip")
    write_clip_folder(data / "models" / "CLIP" / "clip", tiny_openai_clip())
    running = start_server(open_app(data, run_options={"device": "cpu", **SHORT}))
    try:
        with running.client() as client:
            answer = client.post("/sdapi/v1/interrogate", json={"image": png_base64(8, 8), "model": "clip"})
    finally:
        running.stop()

    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith("model_base_caption_capfilt_large.pth: refused as unsafe") and "system" in detail
    assert not marker.exists()
