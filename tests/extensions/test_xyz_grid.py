"""The built-in X/Y/Z plot: A1111 v1.10's axes and value syntax, its legends, and a Z-axis plot on the bundled model.

The HTTP side (A1111 clients' script_args, Prompt S/R, Checkpoint name, 422s) is in
tests/server/test_api_xyz_grid.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from PIL import Image

import sdstudio.extensions.scripts.host as host
from sdstudio.app import open_app
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.engine.scripting import ScriptSelection
from sdstudio.extensions.scripts.grid_legend import GridAnnotation, draw_grid_annotations

SMALL = dict(prompt="a red circle", width=64, height=64, steps=2, sampler_name="Euler")


@pytest.fixture(scope="module")
def xyz():
    """The script's module, loaded from the built-in folder as the host loads it."""
    path = Path(host.__file__).parent / "builtin" / "xyz_grid.py"
    spec = importlib.util.spec_from_file_location("xyz_grid_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_axes_keep_a1111_v1_10_order_so_clients_indexes_pick_the_same_axis(xyz):
    txt2img = [axis.label for axis in xyz.axes_for(False)]
    img2img = [axis.label for axis in xyz.axes_for(True)]
    assert txt2img[:12] == [
        "Nothing",
        "Seed",
        "Var. seed",
        "Var. strength",
        "Steps",
        "Hires steps",
        "CFG Scale",
        "Prompt S/R",
        "Prompt order",
        "Sampler",
        "Hires sampler",
        "Checkpoint name",
    ]
    assert img2img[5:11] == ["CFG Scale", "Image CFG Scale", "Prompt S/R", "Prompt order", "Sampler", "Checkpoint name"]
    assert txt2img.index("Schedule type") == 17 and txt2img.index("Clip skip") == 25 and txt2img.index("VAE") == 30
    assert "Hires upscaler" in txt2img and "Hires upscaler" not in img2img
    assert "Cond. Image Mask Weight" in img2img and "Cond. Image Mask Weight" not in txt2img
    assert txt2img[-3:] == ["RNG source", "FP8 mode", "Size"] and len(txt2img) == 43 and len(img2img) == 42


def test_script_arguments_are_a1111s_in_order_with_its_defaults(data_dir):
    app = open_app(data_dir)
    entry = app.scripts.find("img2img", "X/Y/Z plot")
    labels = [control.label for control in entry.controls]
    assert labels == [
        *["X type", "X values", "X values", "Y type", "Y values", "Y values", "Z type", "Z values", "Z values"],
        *["Draw legend", "Include Sub Images", "Include Sub Grids", "Keep -1 for seeds"],
        *["Vary seeds for X", "Vary seeds for Y", "Vary seeds for Z", "Grid margins (px)"],
        "Use text inputs instead of dropdowns",
    ]
    defaults = entry.arguments([], "script_args")
    assert defaults[:9] == [1, "", [], 0, "", [], 0, "", []], "X is Seed, Y and Z Nothing (type as an index)"
    assert defaults[9:] == [True, False, False, False, False, False, False, 0, False]


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("1-5", "int", [1, 2, 3, 4, 5]),
        ("1-10 (+2)", "int", [1, 3, 5, 7, 9]),
        ("10-1 (-3)", "int", [10, 7, 4, 1]),
        ("1-10 [5]", "int", [1, 3, 5, 7, 10]),
        ("-1, 5 ,7", "int", [-1, 5, 7]),
        ("0.5-1.5 (+0.5)", "float", [0.5, 1.0, 1.5]),
        ("1-2 [3], 7", "float", [1.0, 1.5, 2.0, 7.0]),
        ("3", "float", [3.0]),
    ],
)
def test_number_values_take_ranges_steps_and_counts(xyz, text, kind, expected):
    assert xyz.expand_numbers(xyz.csv_values(text), kind, 1000) == expected


def test_bad_or_huge_number_values_are_refused(xyz):
    with pytest.raises(ValueError, match="'abc' is not a whole number"):
        xyz.expand_numbers(["2", "abc"], "int", 1000)
    with pytest.raises(ValueError, match="'nan' is not a number"):
        xyz.expand_numbers(["nan"], "float", 1000)
    with pytest.raises(ValueError, match="step of 0"):
        xyz.expand_numbers(["1-5 (0)"], "float", 1000)
    with pytest.raises(ValueError, match="over 100 values"):
        xyz.expand_numbers(["1-1000000000"], "int", 100)


def test_csv_values_keep_quoted_commas_and_prompt_order_moves_tokens(xyz):
    assert xyz.csv_values('cat, "red, blue" ,dog') == ["cat", "red, blue", "dog"]
    assert xyz.csv_text(["a", "b, c"]) == 'a,"b, c"'
    assert xyz._reordered("a cat, red, big", ("big", "cat")) == "a big, red, cat"


def test_grid_legends_add_bands_only_where_there_is_text():
    grid = Image.new("RGB", (128, 64), (10, 200, 10))
    plain = draw_grid_annotations(grid, 64, 64, [[GridAnnotation()]] * 2, [[GridAnnotation()]])
    assert plain.size == grid.size and plain.tobytes() == grid.tobytes()
    labelled = draw_grid_annotations(grid, 64, 64, [[GridAnnotation("Seed: 1")], [GridAnnotation("Seed: 2")]], [[]])
    assert labelled.width == 128 and labelled.height > 64
    band = labelled.crop((0, 0, 128, labelled.height - 64)).convert("L")
    assert band.getextrema()[0] < 100, "black legend text on the white band"
    assert labelled.crop((0, labelled.height - 64, 128, labelled.height)).tobytes() == grid.tobytes()
    both = draw_grid_annotations(
        grid, 64, 64, [[GridAnnotation("a")], [GridAnnotation("b")]], [[GridAnnotation("c")]], 6
    )
    assert both.width == 128 + 64 * 3 // 4 + 6 and both.height == labelled.height


def test_a_z_axis_gives_sub_grids_and_fixed_then_varied_seeds(data_dir):
    """X = CFG Scale with "Vary seeds for X", Z = Steps, seed -1: every cell's seed comes from one fixed seed."""
    app = open_app(data_dir)
    request = Txt2ImgRequest(**SMALL, seed=-1)
    args = [6, "5,7", [], 0, "", [], 4, "2,3", [], False, True, True, False, True, False, False, 0, False]
    result = app.engine.txt2img(request, scripts=ScriptSelection("x/y/z plot", args))

    combined, first, second, *cells = result.images
    assert result.index_of_first_image == 3 and len(cells) == 4
    assert first.size == second.size == (128, 64), "no legend: the bare 2x1 X/Y grids"
    assert combined.size == (256, 64) and combined.crop((128, 0, 256, 64)).tobytes() == second.tobytes()
    assert first.crop((64, 0, 128, 64)).tobytes() == cells[1].tobytes()
    seed = result.seeds[0]
    assert result.seeds == [seed, seed + 1, seed, seed + 1]
    for infotext, (cfg, steps) in zip(result.infotexts, [(5, 2), (7, 2), (5, 3), (7, 3)]):
        assert f"CFG scale: {cfg}," in infotext and f"Steps: {steps}," in infotext
    main, *subs = result.info["infotexts"][:3]
    assert "X Type: CFG Scale" in main and "Z Type: Steps" in main and 'Z Values: "2,3"' in main
    assert all("X Type: CFG Scale" in sub and "Z Type" not in sub for sub in subs)
