"""Scripts over A1111's API, as clients send them: script_name + script_args, alwayson_scripts, the listings."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.app import open_app
from server.conftest import start_server

SAMPLES = Path(__file__).parents[1] / "extensions" / "sample_extensions"
SMALL = dict(prompt="a red circle", width=64, height=64, steps=2, sampler_name="Euler", seed=7)


@pytest.fixture
def server(data_dir):
    for name in ("probe", "twice", "broken_import"):
        shutil.copytree(SAMPLES / name, data_dir / "extensions" / name)
    running = start_server(open_app(data_dir))
    yield running
    running.stop()


def post(client, path: str, **body):
    return client.post(f"/sdapi/v1/{path}", json=body)


def infotext_of(encoded: str) -> str:
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return image.info["parameters"]


def test_listings_show_installed_scripts_their_arguments_and_broken_extensions(server):
    with server.client() as client:
        scripts = client.get("/sdapi/v1/scripts").json()
        assert {"probe", "twice"} <= set(scripts["txt2img"]) and {"probe", "twice"} <= set(scripts["img2img"])
        info = client.get("/sdapi/v1/script-info").json()
        twice = next(entry for entry in info if entry["name"] == "twice" and not entry["is_img2img"])
        assert twice["is_alwayson"] is False
        assert twice["args"] == [
            {"label": "Seed offset", "value": 1, "minimum": 1, "maximum": 100, "step": 1, "choices": None}
        ]
        probe = next(entry for entry in info if entry["name"] == "probe" and entry["is_img2img"])
        assert probe["is_alwayson"] is True and [a["label"] for a in probe["args"]] == ["Enabled", "Tag"]
        extensions = {item["name"]: item for item in client.get("/sdapi/v1/extensions").json()}
        assert set(extensions) == {"probe", "twice", "broken_import"}
        assert all(item["enabled"] for item in extensions.values())
        assert "failed to import" in extensions["broken_import"]["errors"][0]


def test_script_name_and_args_run_the_script(server):
    with server.client() as client:
        answer = post(client, "txt2img", **SMALL, script_name="twice", script_args=[3])
        assert answer.status_code == 200, answer.text[:300]
        body = answer.json()
        assert len(body["images"]) == 2
        assert "Seed: 7," in infotext_of(body["images"][0]) and "Seed: 10," in infotext_of(body["images"][1])


def test_alwayson_script_args_reach_the_script(server):
    with server.client() as client:
        answer = post(client, "txt2img", **SMALL, alwayson_scripts={"Probe": {"args": [True, "from-api"]}})
        assert answer.status_code == 200, answer.text[:300]
        infotext = infotext_of(answer.json()["images"][0])
        assert infotext.startswith("a red circle, from-api 0\n") and "Probe tag: from-api" in infotext


def test_unknown_scripts_and_bad_arguments_are_422_naming_the_field_and_a_failing_script_names_its_extension(server):
    with server.client() as client:
        unknown = post(client, "txt2img", **SMALL, script_name="x/y/z plotz")
        assert unknown.status_code == 422 and "script_name" in unknown.text and "x/y/z plotz" in unknown.text
        not_alwayson = post(client, "txt2img", **SMALL, alwayson_scripts={"twice": {"args": []}})
        assert not_alwayson.status_code == 422 and "alwayson_scripts" in not_alwayson.text
        bad_arg = post(client, "txt2img", **SMALL, script_name="twice", script_args=["many"])
        assert bad_arg.status_code == 422 and "script_args" in bad_arg.text and "Seed offset" in bad_arg.text
        failing = post(client, "img2img", **SMALL, script_name="Twice", script_args=[13], init_images=[_png()])
        assert failing.status_code == 400, failing.text[:300]
        assert "extension twice" in failing.text and "unlucky offset" in failing.text
        assert post(client, "txt2img", **SMALL).status_code == 200  # the server goes on


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 200)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_pasted_infotext_fills_always_on_script_arguments_and_extensions_see_it(server):
    infotext = "a red circle\nSteps: 2, Sampler: Euler, Seed: 7, Size: 64x64, Probe: True, Probe tag: pasted"
    with server.client() as client:
        answer = post(client, "txt2img", infotext=infotext)
        assert answer.status_code == 200, answer.text[:300]
        made = infotext_of(answer.json()["images"][0])
    assert made.startswith("a red circle, pasted 0\n") and "Probe tag: pasted" in made
    events = server.app.scripts.find("txt2img", "probe").script.events
    assert ("infotext_pasted", infotext) in events


def test_extension_options_have_defaults_and_saved_values(server):
    host, store = server.app.scripts, server.app.settings_store
    [option] = host.options()
    assert (option.key, option.default, option.label, option.section) == (
        "probe_strength",
        0.5,
        "Probe strength",
        "Probe",
    )
    assert host.option(store.current, "probe_strength") == 0.5
    with server.client() as client:
        assert client.post("/sdapi/v1/options", json={"probe_strength": 0.8}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["probe_strength"] == 0.8
    assert host.option(store.current, "probe_strength") == 0.8
