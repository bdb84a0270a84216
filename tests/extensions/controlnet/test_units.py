"""ControlNet units as clients send them: sd-webui-controlnet's defaults, legacy names, errors naming the field."""

from __future__ import annotations

import pytest
from PIL import Image

from sdstudio.errors import InvalidRequest
from sdstudio.extensions.controlnet.units import ControlMode, ResizeMode, parse_unit, parse_units
from sdstudio.extensions.scripts.builtin.controlnet import fit_image, pixel_perfect_resolution


def test_missing_fields_take_sd_webui_controlnet_defaults():
    unit = parse_unit({"model": "canny"}, 0)
    assert unit is not None
    assert (unit.enabled, unit.module, unit.weight, unit.resize_mode, unit.control_mode) == (
        True,
        "none",
        1.0,
        ResizeMode.CROP_AND_RESIZE,
        ControlMode.BALANCED,
    )
    assert (unit.processor_res, unit.threshold_a, unit.threshold_b) == (-1, -1, -1)
    assert (unit.guidance_start, unit.guidance_end, unit.pixel_perfect, unit.low_vram) == (0.0, 1.0, False, False)


def test_legacy_names_integers_and_the_positional_form():
    unit = parse_unit(
        {"input_image": "IMG", "mask_image": "MASK", "lowvram": True, "resize_mode": 2, "control_mode": 1}, 0
    )
    assert unit is not None
    assert (unit.image, unit.mask, unit.low_vram) == ("IMG", "MASK", True)
    assert unit.resize_mode is ResizeMode.RESIZE_AND_FILL and unit.control_mode is ControlMode.PROMPT
    assert parse_unit({"resize_mode": "Envelope (Outer Fit)"}, 0).resize_mode is ResizeMode.RESIZE_AND_FILL
    assert parse_unit({"guessmode": True}, 0).control_mode is ControlMode.CONTROL
    positional = parse_unit([True, "canny", "m", 0.5, "IMG", "Just Resize"], 0)
    assert (positional.module, positional.weight, positional.resize_mode) == ("canny", 0.5, ResizeMode.JUST_RESIZE)
    assert [index for index, _ in parse_units([{"enabled": False}, None, {"model": "x"}])] == [2]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"weight": 3}, "controlnet[1].weight"),
        ({"guidance_end": 1.5}, "controlnet[1].guidance_end"),
        ({"guidance_start": 0.9, "guidance_end": 0.1}, "controlnet[1]"),
        ({"control_mode": 7}, "controlnet[1].control_mode"),
        ({"image": "a", "input_image": "b"}, "controlnet[1]"),
        (42, "controlnet[1]"),
    ],
)
def test_bad_values_name_the_unit_and_field(value, field):
    with pytest.raises(InvalidRequest) as raised:
        parse_unit(value, 1)
    assert raised.value.field == field


def test_an_enabled_unit_without_an_image_says_so():
    unit = parse_unit({"module": "canny"}, 0)
    with pytest.raises(InvalidRequest, match="no image") as raised:
        unit.images("controlnet[0]")
    assert raised.value.field == "controlnet[0].image"


def test_resize_modes_fit_the_map_to_the_target():
    wide = Image.new("RGB", (200, 100), (255, 255, 255))
    assert fit_image(wide, 64, 64, ResizeMode.JUST_RESIZE).getpixel((0, 0)) == (255, 255, 255)
    assert fit_image(wide, 64, 64, ResizeMode.CROP_AND_RESIZE).getpixel((0, 0)) == (255, 255, 255)
    filled = fit_image(wide, 64, 64, ResizeMode.RESIZE_AND_FILL)
    assert filled.size == (64, 64) and filled.getpixel((32, 0)) == (0, 0, 0) and filled.getpixel((32, 32)) != (0, 0, 0)
    assert pixel_perfect_resolution(wide, 64, 64, ResizeMode.CROP_AND_RESIZE) == 64
    assert pixel_perfect_resolution(wide, 64, 64, ResizeMode.RESIZE_AND_FILL) == 32
