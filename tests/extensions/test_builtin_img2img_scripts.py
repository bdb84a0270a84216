"""The built-in img2img scripts (Loopback, SD upscale, Outpainting mk2, Poor man's outpainting) on the bundled model.

A recording always-on script (an extension the tests write) sees every job the scripts run,
so the tests check what each job got (init image, strength, batch) as well as the results.
"""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw
from server.conftest import start_server
from tiny_models import write_tiny_blip, write_tiny_clip_model

from sdstudio.app import open_app
from sdstudio.engine.request import Img2ImgRequest
from sdstudio.engine.scripting import ScriptSelection
from sdstudio.errors import SdStudioError
from sdstudio.extensions.scripts.tiles import combine_grid, split_grid, tile_counts

RECORDER = '''
from sdstudio.extensions.scripts import AlwaysVisible, Script


class Recorder(Script):
    """Records what every job of a request starts from."""

    events = []

    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        return AlwaysVisible

    def before_process(self, p, *args):
        type(self).events.append(
            {
                "init": [image.copy() for image in p.init_images],
                "strength": p.denoising_strength,
                "size": (p.width, p.height),
                "batch_size": p.batch_size,
                "mask": p.mask,
            }
        )
'''


def _init_image() -> Image.Image:
    """A 64x64 image with an off-centre disc, so that misplaced tiles show."""
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 12, 40, 44), fill=(20, 200, 40))
    draw.rectangle((44, 40, 60, 60), fill=(30, 40, 220))
    return image


INIT = _init_image()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("builtin-scripts") / "data"
    scripts = root / "extensions" / "recorder" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "recorder.py").write_text(RECORDER, encoding="utf-8")
    write_tiny_blip(root / "models" / "BLIP" / "blip-tiny")  # for Loopback's "CLIP" interrogation
    write_tiny_clip_model(root / "models" / "CLIP" / "clip-tiny")
    return open_app(root, run_options={"interrogate_clip_min_length": 4, "interrogate_clip_max_length": 8})


@pytest.fixture
def events(app):
    recorded = app.scripts.find("img2img", "recorder").script.events
    recorded.clear()
    return recorded


SMALL = dict(prompt="a red circle", width=64, height=64, steps=2, sampler_name="Euler", seed=7, denoising_strength=0.5)


def request(**fields) -> Img2ImgRequest:
    return Img2ImgRequest(**{**SMALL, "init_images": [INIT], **fields})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def strength_of(infotext: str) -> float:
    found = re.search(r"Denoising strength: ([0-9.]+)", infotext)
    assert found, infotext
    return float(found.group(1))


def test_the_four_scripts_are_img2img_only_with_a1111s_arguments(app):
    titles = ["loopback", "sd upscale", "outpainting mk2", "poor man's outpainting"]
    assert set(titles) <= set(app.scripts.titles("img2img"))
    assert not set(titles) & set(app.scripts.titles("txt2img"))
    info = {entry["name"]: entry["args"] for entry in app.scripts.script_info()}
    assert [a["label"] for a in info["loopback"]] == [
        "Loops",
        "Final denoising strength",
        "Denoising strength curve",
        "Append interrogated prompt at each iteration",
    ]
    assert [a["value"] for a in info["loopback"]] == [4, 0.5, "Linear", "None"]
    upscale = info["sd upscale"]
    assert [a["label"] for a in upscale[1:]] == ["Tile overlap", "Upscaler", "Scale Factor"]
    assert upscale[2]["choices"][:3] == ["None", "Lanczos", "Nearest"]  # A1111's built-ins first
    assert [a["value"] for a in info["outpainting mk2"][1:]] == [128, 8, ["left", "right", "up", "down"], 1.0, 0.05]
    assert [a["value"] for a in info["poor man's outpainting"]] == [128, 4, "fill", ["left", "right", "up", "down"]]


def test_loopback_feeds_each_image_back_as_the_next_init_with_the_curves_strengths(app, events):
    result = app.engine.img2img(request(), scripts=ScriptSelection("Loopback", [3, 0.9, "Aggressive", "None"]))

    assert result.index_of_first_image == 1 and len(result.images) == 4  # the grid, then the three loops
    images = result.images[1:]
    assert result.images[0].size == (192, 64) and [image.size for image in images] == [(64, 64)] * 3
    assert [event["init"][0].tobytes() for event in events] == [
        INIT.tobytes(),
        images[0].convert("RGB").tobytes(),
        images[1].convert("RGB").tobytes(),
    ]
    # Aggressive: strength moves from the request's 0.5 to 0.9 along sin(progress · π/2).
    expected = [0.5, 0.5 + 0.4 * math.sin(math.pi / 4), 0.9]
    assert [event["strength"] for event in events] == pytest.approx(expected)
    assert [strength_of(text) for text in result.infotexts] == pytest.approx(expected, abs=1e-6)
    assert result.seeds == [7, 8, 9]
    assert (
        "Final denoising strength: 0.9" in result.infotexts[0] and "Denoising curve: Aggressive" in result.infotexts[0]
    )
    assert len(result.js()["infotexts"]) == 4


def test_loopback_appends_the_interrogated_prompt_of_each_loops_init_image(app, events):
    result = app.engine.img2img(request(), scripts=ScriptSelection("Loopback", [2, 0.5, "Linear", "CLIP"]))

    prompts = [text.split("\n")[0] for text in result.infotexts]
    assert len(prompts) == 2 and all(p.startswith("a red circle, ") and len(p) > 14 for p in prompts)
    with pytest.raises(SdStudioError, match="DeepDanbooru"):
        app.engine.img2img(request(), scripts=ScriptSelection("Loopback", [2, 0.5, "Linear", "DeepBooru"]))


def test_split_grid_spaces_tiles_as_a1111_and_combine_grid_puts_them_back():
    assert tile_counts(128, 128, 64, 64, 32) == (3, 3)
    assert tile_counts(1024, 768, 512, 512, 64) == (3, 2)
    grid = split_grid(INIT.resize((128, 96)), tile_w=64, tile_h=64, overlap=16)
    assert [row.y for row in grid.rows] == [0, 32] and [tile.x for tile in grid.rows[0].tiles] == [0, 32, 64]
    assert combine_grid(grid).tobytes() == INIT.resize((128, 96)).tobytes()
    with pytest.raises(ValueError, match="overlap"):
        tile_counts(128, 128, 64, 64, 64)


def test_sd_upscale_doubles_the_image_through_img2img_tiles_batched(app, events):
    result = app.engine.img2img(
        request(batch_size=4, denoising_strength=0.2), scripts=ScriptSelection("SD upscale", [None, 32, 1, 2])
    )

    [image] = result.images
    assert image.size == (128, 128)
    # 128x128 in 64x64 tiles overlapping by 32: 3 × 3 tiles, in batches of the request's batch size.
    assert [event["batch_size"] for event in events] == [4, 4, 1]
    assert all(event["size"] == (64, 64) for event in events)
    upscaled = INIT.resize((128, 128), Image.Resampling.LANCZOS)
    assert [tile.tobytes() for event in events for tile in event["init"]] == [
        upscaled.crop((x, y, x + 64, y + 64)).tobytes() for y in (0, 32, 64) for x in (0, 32, 64)
    ]
    # The redrawn tiles are back in their places: the result looks like the upscaled image, not its mirror.
    here = np.abs(pixels(image) - pixels(upscaled)).mean()
    assert here < np.abs(pixels(image) - pixels(upscaled.transpose(Image.Transpose.FLIP_LEFT_RIGHT))).mean()
    assert "SD upscale overlap: 32, SD upscale upscaler: Lanczos" in result.infotexts[0]


def test_outpainting_mk2_grows_the_chosen_sides_and_keeps_the_image(app, events):
    result = app.engine.img2img(
        request(), scripts=ScriptSelection("Outpainting mk2", [None, 32, 1, ["left", "right"], 1.0, 0.05])
    )

    [image] = result.images
    assert image.size == (128, 64)  # 32 pixels on the left and on the right
    assert len(events) == 2 and all(event["mask"] is not None for event in events)  # one inpainting job per side
    kept = np.abs(pixels(image)[:, 48:80] - pixels(INIT)[:, 16:48]).mean()
    assert kept < 2, kept
    assert np.abs(pixels(image)[:, :24] - pixels(INIT)[:, :24]).mean() > kept  # the new strips are new


def test_poor_mans_outpainting_grows_the_chosen_sides_tile_by_tile_and_keeps_the_image(app, events):
    result = app.engine.img2img(
        request(), scripts=ScriptSelection("Poor man's outpainting", [32, 1, 1, ["up", "down"]])
    )

    [image] = result.images
    assert image.size == (64, 128)  # 32 pixels above and below
    # Tiles 64x64 overlapping by 32 start at y = 0, 32, 64; the middle one lies inside the old image.
    assert len(events) == 2
    kept = np.abs(pixels(image)[40:88] - pixels(INIT)[8:56]).mean()
    assert kept < 2, kept
    assert np.abs(pixels(image)[:24] - pixels(INIT)[:24]).mean() > kept  # the new strips are new


def test_sd_upscale_over_http_as_an_a1111_client_sends_it(app):
    buffer = io.BytesIO()
    INIT.save(buffer, format="PNG")
    body = {
        **SMALL,
        "init_images": [base64.b64encode(buffer.getvalue()).decode()],
        "batch_size": 3,
        "script_name": "SD upscale",
        "script_args": ["", 16, 1, 2],  # A1111's order: info, overlap, upscaler index (Lanczos), scale factor
    }
    server = start_server(app)
    try:
        with server.client() as client:
            answer = client.post("/sdapi/v1/img2img", json=body)
            too_wide = client.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 64, 1, 2]})
            defaults = client.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 16]})
    finally:
        server.stop()

    assert answer.status_code == 200, answer.text[:300]
    [encoded] = answer.json()["images"]
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert image.size == (128, 128)
        assert "SD upscale overlap: 16" in image.info["parameters"]
    assert too_wide.status_code == 422 and "script_args" in too_wide.text and "Tile overlap" in too_wide.text
    # Arguments left out take the defaults: upscaler 0 ("None") tiles the image at its own size.
    assert defaults.status_code == 200, defaults.text[:300]
    with Image.open(io.BytesIO(base64.b64decode(defaults.json()["images"][0]))) as image:
        assert image.size == (64, 64) and "SD upscale upscaler: None" in image.info["parameters"]
