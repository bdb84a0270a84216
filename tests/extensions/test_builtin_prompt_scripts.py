"""The built-in "Prompt matrix" and "Prompts from file or textbox" scripts on the bundled model.

Through the engine as the web UI runs them, and over real HTTP with the body an A1111 client
sends (`script_name` + positional `script_args`).
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from server.conftest import start_server

from sdstudio.app import open_app
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.engine.saving import read_infotext
from sdstudio.engine.scripting import ScriptSelection
from sdstudio.errors import InvalidRequest

SMALL = dict(width=64, height=64, steps=2, sampler_name="Euler", seed=7)
MATRIX = "a red circle|blue background|small"
LINES = 'a blue square\n\n--prompt "a green dot" --steps 3 --seed 5\na yellow star'


@pytest.fixture
def app(data_dir):
    return open_app(data_dir)


def legend_bands(grid: Image.Image, cell: int = 64) -> tuple[int, int]:
    """(left, top) widths of the legend around a 2×2 grid of `cell`-sized images."""
    return grid.width - 2 * cell, grid.height - 2 * cell


def darkest(image: Image.Image) -> int:
    return min(min(pixel) for pixel in image.convert("RGB").getdata())


def has_grey_text(image: Image.Image) -> bool:
    return (153, 153, 153) in set(image.convert("RGB").getdata())


def test_prompt_matrix_makes_every_combination_with_one_seed_and_a_legend_grid(app):
    request = Txt2ImgRequest(prompt=MATRIX, **SMALL)
    result = app.engine.txt2img(
        request, scripts=ScriptSelection("Prompt matrix", [False, False, "positive", "comma", 0])
    )

    assert result.prompts == [
        "a red circle",
        "a red circle, blue background",
        "a red circle, small",
        "a red circle, blue background, small",
    ]
    assert result.seeds == [7, 7, 7, 7]
    assert len(result.images) == 5 and result.index_of_first_image == 1
    for index, infotext in enumerate(result.infotexts):
        assert infotext.startswith(result.prompts[index] + "\n") and "Seed: 7," in infotext
    # The grid: the four cells with "blue background" over the columns and "small" beside the rows.
    grid = result.images[0]
    left, top = legend_bands(grid)
    assert left == 48 and top > 0
    absent_column, present_column = grid.crop((left, 0, left + 64, top)), grid.crop((left + 64, 0, left + 128, top))
    assert has_grey_text(absent_column) and darkest(absent_column) > 100  # struck through in grey
    assert darkest(present_column) < 60 and not has_grey_text(present_column)
    absent_row, present_row = grid.crop((0, top, left, top + 64)), grid.crop((0, top + 64, left, top + 128))
    assert has_grey_text(absent_row) and darkest(present_row) < 60
    assert list(grid.crop((left + 64, top + 64, left + 128, top + 128)).getdata()) == list(
        result.images[4].convert("RGB").getdata()
    )
    # Saved among the grids, with the first image's infotext; A1111's info lists the grid's infotext first.
    assert result.grid_path is not None and result.grid_path.parent.parent.name == "txt2img-grids"
    with Image.open(result.grid_path) as saved:
        assert saved.size == grid.size and read_infotext(saved) == result.infotexts[0]
    assert result.js()["infotexts"] == [result.infotexts[0], *result.infotexts]


def test_prompt_matrix_batches_seeds_negative_prompt_and_options(app):
    request = Txt2ImgRequest(prompt="a cat", negative_prompt="dark|blurry|noisy", batch_size=3, **SMALL)
    selection = ScriptSelection("prompt matrix", [True, True, "negative", "space", 10])
    result = app.engine.txt2img(request, scripts=selection)

    # 4 images in batches of 3: a whole batch, then a batch of one (A1111's short last batch).
    assert result.negative_prompts == ["dark", "blurry dark", "noisy dark", "blurry noisy dark"]
    assert result.prompts == ["a cat"] * 4
    assert result.seeds == [7, 8, 9, 10]  # "Random seeds": one more per image
    assert len(result.images) == 5
    assert result.images[0].size == (48 + 2 * 64 + 10, result.images[0].height)  # a 10 px margin between cells
    assert "Negative prompt: blurry noisy dark\n" in result.infotexts[3] and "Seed: 10," in result.infotexts[3]


def test_prompts_from_file_runs_each_line_with_its_options(app):
    request = Txt2ImgRequest(prompt="", **SMALL)
    selection = ScriptSelection("Prompts from file or textbox", [True, False, "start", LINES])
    result = app.engine.txt2img(request, scripts=selection)

    assert result.prompts == ["a blue square", "a green dot", "a yellow star"]
    assert result.seeds == [7, 5, 9]  # "Iterate seed every line"; the second line sets its own
    assert len(result.images) == 3 and result.index_of_first_image == 0
    assert "Steps: 3," in result.infotexts[1] and "Seed: 5," in result.infotexts[1]
    assert "Steps: 2," in result.infotexts[0] and "Steps: 2," in result.infotexts[2]
    assert result.js()["all_seeds"] == [7, 5, 9] and len(result.js()["infotexts"]) == 3


def test_prompts_from_file_joins_the_request_prompt_and_reads_an_uploaded_file(app):
    request = Txt2ImgRequest(prompt="oil painting", negative_prompt="dark", **SMALL)
    uploaded = b"--prompt a cat --negative_prompt blurry\na dog\n"
    selection = ScriptSelection("Prompts from file or textbox", [False, False, "end", "ignored", uploaded])
    result = app.engine.txt2img(request, scripts=selection)

    assert result.prompts == ["oil painting a cat", "oil painting a dog"]
    assert result.negative_prompts == ["dark blurry", "dark"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("--steps many", "line 3: --steps expects an integer, got 'many'"),
        ("--prompt x --steps 0", "line 3: steps: must be between 1"),
        ("--prompt x --outpath_samples /tmp/elsewhere", "line 3: --outpath_samples cannot be set here"),
        ("--sd_model nothing-like-it", "line 3: --sd_model: no checkpoint matches 'nothing-like-it'"),
    ],
)
def test_a_bad_line_is_refused_naming_it_before_any_line_runs(app, line, message):
    request = Txt2ImgRequest(prompt="", **SMALL)
    selection = ScriptSelection("Prompts from file or textbox", [False, False, "start", f"a cat\n\n{line}"])
    with pytest.raises(InvalidRequest) as error:
        app.engine.txt2img(request, scripts=selection)
    assert error.value.field == "script_args" and error.value.reason.startswith(message)
    assert not list(app.paths.root.rglob("*.png"))  # the good line did not run either


def infotext_of(encoded: str) -> str:
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return image.info["parameters"]


def test_both_scripts_over_http_as_an_a1111_client_sends_them(data_dir):
    server = start_server(open_app(data_dir))
    try:
        with server.client() as client:
            assert {"prompt matrix", "prompts from file or textbox"} <= set(
                client.get("/sdapi/v1/scripts").json()["txt2img"]
            )
            body = dict(
                SMALL, prompt=MATRIX, script_name="prompt matrix", script_args=[False, False, "positive", "comma", 0]
            )
            answer = client.post("/sdapi/v1/txt2img", json=body)
            assert answer.status_code == 200, answer.text[:300]
            images = answer.json()["images"]
            assert len(images) == 5
            with Image.open(io.BytesIO(base64.b64decode(images[0]))) as grid:
                assert grid.size[0] == 48 + 2 * 64
            assert infotext_of(images[4]).startswith("a red circle, blue background, small\n")

            body = dict(SMALL, prompt="", script_name="prompts from file or textbox")
            answer = client.post("/sdapi/v1/txt2img", json=dict(body, script_args=[False, False, "start", LINES]))
            assert answer.status_code == 200, answer.text[:300]
            images = answer.json()["images"]
            assert len(images) == 3
            assert "Steps: 3," in infotext_of(images[1]) and "Seed: 5," in infotext_of(images[1])
            assert infotext_of(images[2]).startswith("a yellow star\n")

            bad = client.post(
                "/sdapi/v1/txt2img", json=dict(body, script_args=[False, False, "start", "a\n--steps many"])
            )
            assert bad.status_code == 422, bad.text[:300]
            assert "script_args" in bad.text and "line 2: --steps expects an integer" in bad.text
    finally:
        server.stop()
