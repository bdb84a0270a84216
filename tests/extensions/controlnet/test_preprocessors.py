"""The weight-free ControlNet preprocessors: map sizes, what each map shows, and the module listing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.errors import InvalidRequest, NotFound, NotImplementedYet
from sdstudio.extensions.controlnet.preprocessors import (
    ANNOTATOR_DOWNLOADS,
    NETWORK_PREPROCESSORS,
    PREPROCESSORS,
    control_values,
    module_detail,
    module_list,
    run_preprocessor,
)

HEIGHT, WIDTH = 64, 80
RES = 128  # short side 64 -> 128: maps scaled to processor_res are 128x160

# Modules that, as in sd-webui-controlnet, keep the input size instead of scaling to processor_res.
KEEP_INPUT_SIZE = {
    "none",
    "invert",
    "tile_resample",
    "tile_colorfix",
    "tile_colorfix+sharp",
    "recolor_luminance",
    "recolor_intensity",
    "inpaint",
    "inpaint_only",
    "reference_only",
    "reference_adain",
    "reference_adain+attn",
}


@pytest.fixture
def photo() -> Image.Image:
    """A 64x80 RGB image with structure: a gradient, a dark disc and noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([x * 3, y * 3, (x + y) * 2], axis=2).astype(np.float32)
    base[(y - 30) ** 2 + (x - 40) ** 2 < 150] = 20
    base += rng.normal(0, 8, base.shape)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def white_square_on_black() -> Image.Image:
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    pixels[16:48, 24:56] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("name", sorted(PREPROCESSORS))
def test_every_module_returns_an_rgb_uint8_map_of_the_documented_size(name: str, photo: Image.Image) -> None:
    result = np.asarray(run_preprocessor(name, photo, processor_res=RES, seed=3))
    expected = (HEIGHT, WIDTH) if name in KEEP_INPUT_SIZE else (RES, RES * WIDTH // HEIGHT)
    assert result.dtype == np.uint8
    assert result.shape == (*expected, 3)


def test_canny_finds_the_square_border_and_nothing_inside() -> None:
    edges = np.asarray(run_preprocessor("canny", white_square_on_black(), processor_res=HEIGHT))[:, :, 0]
    on = edges > 0
    assert on.any()
    rows, cols = np.nonzero(on)
    # every edge pixel lies within a pixel of the square's border (rows 16..47, cols 24..55)
    near_border = (
        (np.abs(rows - 16) <= 1) | (np.abs(rows - 47) <= 1) | (np.abs(cols - 24) <= 1) | (np.abs(cols - 55) <= 1)
    )
    assert near_border.all()
    assert not on[20:44, 28:52].any()  # the inside
    assert not on[:12].any() and not on[:, :20].any()  # the background away from it
    # all four sides are found
    assert on[15:18, 30:50].any() and on[46:49, 30:50].any() and on[20:44, 23:26].any() and on[20:44, 54:57].any()


def test_canny_thresholds_matter(photo: Image.Image) -> None:
    loose = np.asarray(run_preprocessor("canny", photo, RES, 1, 2)).sum()
    strict = np.asarray(run_preprocessor("canny", photo, RES, 250, 255)).sum()
    assert loose > strict


def test_invert_inverts(photo: Image.Image) -> None:
    assert np.array_equal(np.asarray(run_preprocessor("invert", photo)), 255 - np.asarray(photo))


def test_threshold_is_binary_and_follows_the_level(photo: Image.Image) -> None:
    low = np.asarray(run_preprocessor("threshold", photo, RES, threshold_a=30))
    high = np.asarray(run_preprocessor("threshold", photo, RES, threshold_a=100))
    assert set(np.unique(low)) == {0, 255} and set(np.unique(high)) == {0, 255}
    assert (low == 255).sum() > (high == 255).sum()


def test_shuffle_is_deterministic_for_a_seed_and_differs_between_seeds(photo: Image.Image) -> None:
    first = np.asarray(run_preprocessor("shuffle", photo, RES, seed=11))
    again = np.asarray(run_preprocessor("shuffle", photo, RES, seed=11))
    other = np.asarray(run_preprocessor("shuffle", photo, RES, seed=12))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(("rate", "size"), [(1.0, (HEIGHT, WIDTH)), (2.0, (32, 40)), (4.0, (16, 20))])
def test_tile_resample_downsamples_by_the_rate(rate: float, size: tuple[int, int], photo: Image.Image) -> None:
    assert np.asarray(run_preprocessor("tile_resample", photo, threshold_a=rate)).shape[:2] == size


def test_blur_gaussian_smooths(photo: Image.Image) -> None:
    sharp = np.asarray(run_preprocessor("blur_gaussian", photo, HEIGHT, threshold_a=0.01)).astype(float)
    blurred = np.asarray(run_preprocessor("blur_gaussian", photo, HEIGHT, threshold_a=4.0)).astype(float)
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(sharp, axis=1)).mean() / 2


def test_recolor_gamma_darkens_and_gives_a_gray_map(photo: Image.Image) -> None:
    plain = np.asarray(run_preprocessor("recolor_intensity", photo, threshold_a=1.0))
    darker = np.asarray(run_preprocessor("recolor_intensity", photo, threshold_a=2.0))
    assert np.array_equal(plain[:, :, 0], plain[:, :, 1]) and np.array_equal(plain[:, :, 1], plain[:, :, 2])
    assert darker.mean() < plain.mean()


def test_lineart_standard_draws_dark_lines_bright(photo: Image.Image) -> None:
    page = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    page[30:33, 10:70] = 0  # a black line on white
    lines = np.asarray(run_preprocessor("lineart_standard", Image.fromarray(page), processor_res=HEIGHT))[:, :, 0]
    assert lines[30:33, 20:60].mean() > 100
    assert lines[:15].max() == 0


def test_inpaint_marks_masked_pixels_as_minus_one_in_the_control(photo: Image.Image) -> None:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[10:30, 20:50] = 255
    control = run_preprocessor("inpaint_only", photo, mask=Image.fromarray(mask))
    assert control.mode == "RGBA"
    assert np.array_equal(np.asarray(control)[:, :, :3], np.asarray(photo))
    values = control_values(control)
    assert (values[10:30, 20:50] == -1.0).all()
    assert np.allclose(values[40:, :], np.asarray(photo)[40:, :] / 255.0)


def test_inpaint_takes_the_mask_from_the_alpha_channel(photo: Image.Image) -> None:
    rgba = np.concatenate([np.asarray(photo), np.zeros((HEIGHT, WIDTH, 1), dtype=np.uint8)], axis=2)
    rgba[:20, :, 3] = 255
    values = control_values(run_preprocessor("inpaint", Image.fromarray(rgba, mode="RGBA")))
    assert (values[:20] == -1.0).all() and (values[20:] >= 0).all()


def test_reference_modes_return_the_image_and_are_model_free(photo: Image.Image) -> None:
    details = module_detail(None)["module_detail"]
    for name in ("reference_only", "reference_adain", "reference_adain+attn"):
        assert PREPROCESSORS[name].reference
        assert details[name]["model_free"] is True
        assert np.array_equal(np.asarray(run_preprocessor(name, photo)), np.asarray(photo))
    assert details["canny"]["model_free"] is False


def test_unknown_module_is_not_found_by_name(photo: Image.Image) -> None:
    with pytest.raises(NotFound, match="no_such_module"):
        run_preprocessor("no_such_module", photo)


def test_out_of_range_values_give_errors_naming_the_field_or_defaults(photo: Image.Image) -> None:
    with pytest.raises(InvalidRequest, match="processor_res"):
        run_preprocessor("canny", photo, processor_res=100_000)
    # -1 is sd-webui-controlnet's "use the module's default"
    defaults = run_preprocessor("canny", photo, processor_res=-1, threshold_a=-1, threshold_b=-1)
    assert np.array_equal(np.asarray(defaults), np.asarray(run_preprocessor("canny", photo)))
    assert run_preprocessor("blur_gaussian", photo, RES, threshold_a=0).size == (RES * WIDTH // HEIGHT, RES)


def test_scribble_xdog_draws_dark_strokes_white_on_black() -> None:
    page = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    page[30:34, 10:70] = 0
    strokes = np.asarray(run_preprocessor("scribble_xdog", Image.fromarray(page), processor_res=HEIGHT))[:, :, 0]
    assert set(np.unique(strokes)) == {0, 255}
    assert (strokes[30:34, 20:60] == 255).all()
    assert (strokes[:15] == 0).all()


def test_sd_webui_controlnet_spellings_are_accepted(photo: Image.Image) -> None:
    by_label = run_preprocessor("invert (from white bg & black line)", photo)
    assert np.array_equal(np.asarray(by_label), 255 - np.asarray(photo))
    assert run_preprocessor("inpaint_global_harmonious", photo).size == photo.size


def test_module_detail_has_sd_webui_controlnets_shape() -> None:
    answer = module_detail(None)
    assert set(answer) == {"module_list", "module_detail"}
    assert answer["module_list"][0] == "none"
    assert set(answer["module_list"]) == set(PREPROCESSORS)
    assert set(answer["module_detail"]) == set(answer["module_list"])
    for entry in answer["module_detail"].values():
        assert set(entry) == {"model_free", "sliders"}
        for slider in entry["sliders"]:
            assert set(slider) == {"name", "value", "min", "max", "step"}
            assert slider["min"] <= slider["value"] <= slider["max"]
    canny = answer["module_detail"]["canny"]["sliders"]
    assert [s["name"] for s in canny] == ["Resolution", "Low Threshold", "High Threshold"]
    assert [s["value"] for s in canny] == [512, 100, 200]
    assert answer["module_detail"]["invert"]["sliders"] == []


def test_a_network_module_is_listed_only_when_its_weight_file_is_there(tmp_path: Path) -> None:
    image = Image.new("RGB", (WIDTH, HEIGHT))
    assert "depth_midas" in NETWORK_PREPROCESSORS
    assert "depth_midas" not in module_list(tmp_path)
    with pytest.raises(NotFound, match="dpt_hybrid-midas-501f0c75.pt"):
        run_preprocessor("depth_midas", image, models_dir=tmp_path)
    weights = tmp_path / ANNOTATOR_DOWNLOADS / "midas" / "dpt_hybrid-midas-501f0c75.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    assert "depth_midas" in module_list(tmp_path)
    with pytest.raises(NotImplementedYet, match="depth_midas"):
        run_preprocessor("depth_midas", image, models_dir=tmp_path)
    assert "openpose" not in module_list(tmp_path)
    detail = module_detail(tmp_path)["module_detail"]["depth_midas"]
    assert detail == {
        "model_free": False,
        "sliders": [{"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8}],
    }
