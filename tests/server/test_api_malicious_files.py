"""Malicious pickles of every kind sdstudio reads, over real HTTP: listed, refused, never run.

Each file would create a marker file if it were unpickled. Every kind lives where A1111
keeps it; the server lists every folder with 200, refuses to use a checkpoint, VAE,
upscaler or face restorer with a 4xx naming the file, and generates without a LoRA or
embedding named in a prompt with a warning (as A1111 goes on without them), saying why.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from pathlib import Path

import pytest
from malicious_files import FORMS, write_malicious

from sdstudio.app import open_app

from .conftest import start_server
from .test_api_generation import A1111_TXT2IMG_BODY

# Where each kind of pickled model file lives (A1111's layout) -> the file placed there.
EVIL_FILES = {
    "checkpoint": "models/Stable-diffusion/evil.ckpt",
    "vae": "models/VAE/evil.pt",
    "lora": "models/Lora/evil.pt",
    "hypernetwork": "models/hypernetworks/evil.pt",
    "embedding_pt": "embeddings/evil.pt",
    "embedding_bin": "embeddings/evil.bin",
    "esrgan": "models/ESRGAN/evil.pth",
    "realesrgan": "models/RealESRGAN/evil.pth",
    "gfpgan": "models/GFPGAN/evil.pth",
    "codeformer": "models/Codeformer/evil.pth",
}
LISTINGS = (
    ("get", "/sdapi/v1/sd-models"),
    ("get", "/sdapi/v1/sd-vae"),
    ("get", "/sdapi/v1/loras"),
    ("get", "/sdapi/v1/hypernetworks"),
    ("get", "/sdapi/v1/embeddings"),
    ("get", "/sdapi/v1/upscalers"),
    ("get", "/sdapi/v1/realesrgan-models"),
    ("get", "/sdapi/v1/face-restorers"),
    ("post", "/sdapi/v1/refresh-checkpoints"),
    ("post", "/sdapi/v1/refresh-vae"),
    ("post", "/sdapi/v1/refresh-loras"),
    ("post", "/sdapi/v1/refresh-embeddings"),
)


@pytest.fixture(params=FORMS)
def evil_server(request, data_dir_with_model, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    for kind, relative in EVIL_FILES.items():
        write_malicious(data_dir_with_model / relative, markers / kind, request.param)
    running = start_server(open_app(data_dir_with_model))
    running.markers = markers
    running.form = request.param
    with running.client() as client:  # evil.ckpt sorts first: choose the usable model, as a user would
        chosen = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "random-tiny.safetensors"})
        assert chosen.status_code == 200, chosen.text
    yield running
    running.stop()
    assert not list(markers.iterdir()), "a payload ran"


def face_image_b64() -> str:
    """The cartoon face the face-restoration tests draw (dlib finds it, so the restorer's model is loaded)."""
    source = Path(__file__).resolve().parents[1] / "postprocess" / "postprocess_networks.py"
    spec = importlib.util.spec_from_file_location("postprocess_networks", source)
    assert spec is not None and spec.loader is not None
    networks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(networks)
    buffer = io.BytesIO()
    networks.draw_face(256).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def assert_refused(answer, file_name: str) -> None:
    assert 400 <= answer.status_code < 500, answer.text
    message = answer.json()["detail"]
    assert file_name in message and "refused" in message and "unsafe" in message, message


def test_every_listing_answers_and_says_why_an_embedding_or_lora_is_unusable(evil_server, capsys):
    with evil_server.client() as client:
        for method, route in LISTINGS:
            answer = getattr(client, method)(route)
            assert answer.status_code == 200, (route, answer.text)
        embeddings = client.get("/sdapi/v1/embeddings").json()
        loras = {item["name"]: item for item in client.get("/sdapi/v1/loras").json()}
    assert not list(evil_server.markers.iterdir())
    assert "evil" not in embeddings["loaded"]
    skipped = embeddings["skipped"]["evil"]
    assert isinstance(skipped["shape"], int) and isinstance(skipped["vectors"], int)  # as A1111 clients read them
    assert "evil.pt" in skipped["reason"] and "evil.bin" in skipped["reason"] and "unsafe" in skipped["reason"]
    # LoRA pickles are scanned when listed (never loaded): one no scan can walk is known once it was loaded.
    scanned = evil_server.form != "unscannable"
    assert ("unsafe" in loras["evil"].get("error", "")) == scanned, loras["evil"]
    assert all(set(item) == {"name", "alias", "path", "metadata"} for name, item in loras.items() if name != "evil")

    from sdstudio.cli.main import main

    data_dir = str(evil_server.app.paths.root)
    for kind, folder in [("embedding", "embeddings")] + ([("lora", "Lora")] if scanned else []):
        assert main(["--data-dir", data_dir, "models", "list", "--type", kind]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if f"{folder}/evil" in line]
        assert lines and all("unusable" in line and "unsafe" in line for line in lines), (kind, lines)
        assert main(["--data-dir", data_dir, "models", "list", "--type", kind, "--json"]) == 0
        rows = [row for row in json.loads(capsys.readouterr().out) if row["name"].startswith("evil")]
        assert rows and all(not row["usable"] and "unsafe" in row["reason"] for row in rows), rows


def test_lora_embedding_and_hypernetwork_in_a_prompt_generate_with_a_warning_saying_why(evil_server):
    with evil_server.client() as client:
        answer = client.post(
            "/sdapi/v1/txt2img",
            json={**A1111_TXT2IMG_BODY, "prompt": "a cat, evil <lora:evil:1> <hypernet:evil:1>", "steps": 2},
        )
        loras = {item["name"]: item for item in client.get("/sdapi/v1/loras").json()}
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["images"]
    warnings = json.loads(body["info"])["warnings"]
    lora = [w for w in warnings if "LoRA" in w]
    embedding = [w for w in warnings if "embedding" in w]
    assert len(lora) == 1 and "evil.pt" in lora[0] and "refused as unsafe" in lora[0], warnings
    assert len(embedding) == 1 and "evil.pt" in embedding[0] and "refused as unsafe" in embedding[0], warnings
    hypernet = [w for w in warnings if "hypernetwork" in w]
    assert len(hypernet) == 1 and "evil.pt" in hypernet[0] and "refused as unsafe" in hypernet[0], warnings
    assert "evil.pt" in loras["evil"]["error"] and "refused as unsafe" in loras["evil"]["error"]  # listed so now


def test_using_a_checkpoint_vae_upscaler_or_face_restorer_is_refused_naming_the_file(evil_server):
    with evil_server.client() as client:
        vae = client.post(
            "/sdapi/v1/txt2img",
            json={**A1111_TXT2IMG_BODY, "steps": 2, "override_settings": {"sd_vae": "evil.pt"}},
        )
        assert_refused(vae, "evil.pt")
        image = face_image_b64()
        for upscaler in ("evil", "evil (2)"):  # models/ESRGAN/evil.pth, models/RealESRGAN/evil.pth
            upscaled = client.post(
                "/sdapi/v1/extra-single-image", json={"image": image, "upscaler_1": upscaler, "upscaling_resize": 2}
            )
            assert_refused(upscaled, "evil.pth")
        for visibility in ("gfpgan_visibility", "codeformer_visibility"):
            restored = client.post("/sdapi/v1/extra-single-image", json={"image": image, visibility: 1.0})
            assert_refused(restored, "evil.pth")
        checkpoint = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "evil.ckpt"})
        assert_refused(checkpoint, "evil.ckpt")
        override = client.post(
            "/sdapi/v1/txt2img",
            json={**A1111_TXT2IMG_BODY, "steps": 2, "override_settings": {"sd_model_checkpoint": "evil.ckpt"}},
        )
        assert_refused(override, "evil.ckpt")
        back = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "random-tiny.safetensors"})
        assert back.status_code == 200, back.text
        still = client.post("/sdapi/v1/txt2img", json={**A1111_TXT2IMG_BODY, "steps": 2})
        assert still.status_code == 200, still.text


def test_a_malicious_checkpoint_is_listed_as_unusable_and_never_the_default(tmp_path):
    """With no checkpoint chosen, the first usable one is the default: evil.ckpt sorts first but is not usable."""
    from sdstudio.models.registry import ModelRegistry

    paths = open_app(tmp_path / "data").paths
    marker = tmp_path / "pwned"
    folder = paths.folder("checkpoint")
    write_malicious(folder / "aaa-evil.ckpt", marker, "zip")
    registry = ModelRegistry(paths)
    (evil,) = [e for e in registry.list("checkpoint") if e.name == "aaa-evil.ckpt"]
    assert not evil.usable and "unsafe" in (evil.problem or "")
    assert registry.default_checkpoint().name != "aaa-evil.ckpt"
    assert not marker.exists()
