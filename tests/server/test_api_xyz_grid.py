"""The built-in X/Y/Z plot over A1111's API: `script_name: "x/y/z plot"` with A1111-ordered script_args."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from tiny_models import write_tiny_checkpoint

from sdstudio.app import open_app

from .conftest import start_server

SMALL = dict(prompt="a red circle", width=64, height=64, steps=2, sampler_name="Euler", seed=7)
# A1111 v1.10's txt2img axis indexes.
SEED, STEPS, PROMPT_SR, SAMPLER, CHECKPOINT, NGMS, CLIP_SKIP = 1, 4, 7, 9, 11, 12, 25


def xyz_args(x_type, x_values="", x_dropdown=(), y_type=0, y_values="", include_lone_images=True) -> list:
    """script_args in A1111's order: x/y/z type, values, dropdown values, then the options."""
    return [
        *[x_type, x_values, list(x_dropdown), y_type, y_values, [], 0, "", []],
        *[True, include_lone_images, False, False, False, False, False, 0, False],
    ]


@pytest.fixture
def server(data_dir):
    running = start_server(open_app(data_dir))
    yield running
    running.stop()


def plot(client, script_args, **body):
    return client.post(
        "/sdapi/v1/txt2img", json={**SMALL, **body, "script_name": "x/y/z plot", "script_args": script_args}
    )


def decoded(encoded: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    return image


def test_listed_for_both_tabs_with_a1111s_arguments(server):
    with server.client() as client:
        scripts = client.get("/sdapi/v1/scripts").json()
        assert "x/y/z plot" in scripts["txt2img"] and "x/y/z plot" in scripts["img2img"]
        info = client.get("/sdapi/v1/script-info").json()
    entry = next(e for e in info if e["name"] == "x/y/z plot" and not e["is_img2img"])
    assert entry["is_alwayson"] is False and len(entry["args"]) == 18
    assert entry["args"][0]["label"] == "X type" and entry["args"][0]["value"] == "Seed"
    assert entry["args"][0]["choices"][CHECKPOINT] == "Checkpoint name"


def test_seed_by_steps_gives_the_annotated_grid_then_each_cell_with_its_own_infotext(server):
    with server.client() as client:
        answer = plot(client, xyz_args(SEED, "1,2,3", y_type=STEPS, y_values="2,3"), save_images=True)
    assert answer.status_code == 200, answer.text[:300]
    body = answer.json()
    grid, *cells = [decoded(image) for image in body["images"]]
    assert len(cells) == 6
    expected = [(seed, steps) for steps in (2, 3) for seed in (1, 2, 3)]
    for cell, (seed, steps) in zip(cells, expected):
        assert f"Seed: {seed}," in cell.info["parameters"] and f"Steps: {steps}," in cell.info["parameters"]
    # The legend widens and heightens the bare 3x2 grid of 64px cells; the cells sit under it in order.
    assert grid.width > 192 and grid.height > 128
    left, top = grid.width - 192, grid.height - 128
    assert grid.crop((0, 0, grid.width, top)).convert("L").getextrema()[0] < 100, "legend text on top"
    assert grid.crop((0, top, left, grid.height)).convert("L").getextrema()[0] < 100, "legend text on the left"
    for index, cell in enumerate(cells):
        x, y = left + 64 * (index % 3), top + 64 * (index // 3)
        assert grid.crop((x, y, x + 64, y + 64)).tobytes() == cell.convert("RGB").tobytes()
    info = json.loads(body["info"])
    assert info["index_of_first_image"] == 1 and len(info["infotexts"]) == 7
    assert "Script: X/Y/Z plot" in info["infotexts"][0] and "X Type: Seed" in info["infotexts"][0]
    assert "Y Type: Steps" in info["infotexts"][0]
    grids = list((server.app.paths.root / "outputs" / "txt2img-grids").rglob("*.png"))
    assert len(grids) == 1, "the plot's grid is saved once (the cells' jobs make no grids)"


def test_prompt_search_and_replace_changes_the_prompts_per_column(server):
    with server.client() as client:
        answer = plot(client, xyz_args(PROMPT_SR, "red,blue"), negative_prompt="red blur")
    assert answer.status_code == 200, answer.text[:300]
    red, blue = [decoded(image).info["parameters"] for image in answer.json()["images"][1:]]
    assert red.startswith("a red circle\nNegative prompt: red blur\n")
    assert blue.startswith("a blue circle\nNegative prompt: blue blur\n")


def test_checkpoint_name_axis_runs_each_cell_on_its_checkpoint(data_dir):
    write_tiny_checkpoint(data_dir / "models" / "Stable-diffusion", "second.safetensors", seed=3)
    running = start_server(open_app(data_dir))
    try:
        with running.client() as client:
            # A1111's UI sends a choices axis's values in its dropdown argument; short names find the titles.
            answer = plot(client, xyz_args(CHECKPOINT, x_dropdown=["sdstudio-tiny", "second.safetensors"]))
    finally:
        running.stop()
    assert answer.status_code == 200, answer.text[:300]
    tiny, second = [decoded(image) for image in answer.json()["images"][1:]]
    assert "Model: sdstudio-tiny," in tiny.info["parameters"] and "Model: second," in second.info["parameters"]
    assert tiny.tobytes() != second.tobytes()


@pytest.mark.parametrize(
    ("script_args", "words"),
    [
        (xyz_args(SEED, "1", y_type=STEPS, y_values="2,abc"), ["Y axis 'Steps'", "'abc' is not a whole number"]),
        (xyz_args(SAMPLER, x_dropdown=["Euler", "Bogus"]), ["X axis 'Sampler'", "'Bogus'", "unknown sampler"]),
        (xyz_args(CHECKPOINT, "nope"), ["X axis 'Checkpoint name'", "unknown checkpoint 'nope'"]),
        (xyz_args(PROMPT_SR, "purple,blue"), ["X axis 'Prompt S/R'", "did not find 'purple'"]),
        (xyz_args(NGMS, "1"), ["X axis 'Negative Guidance minimum sigma'", "sdstudio cannot plot it"]),
        (xyz_args(SEED, ""), ["X axis 'Seed'", "no values given"]),
        (xyz_args(CLIP_SKIP, "1,20"), ["X axis 'Clip skip'", "value 20", "CLIP_stop_at_last_layers"]),
        (xyz_args(STEPS, "2,inf"), ["X axis 'Steps'", "'inf' is not a whole number"]),
        (xyz_args(99, "1"), ["X type", "index below"]),
    ],
)
def test_a_bad_axis_or_value_is_a_422_naming_the_axis(server, script_args, words):
    with server.client() as client:
        answer = plot(client, script_args)
    assert answer.status_code == 422, answer.text[:300]
    assert "script_args" in answer.text and all(word in answer.text for word in words), answer.text[:400]
