"""Invisible watermark: CompVis message round-trips through a PNG file; unmarked images do not match."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from postprocess_networks import draw_face, noise_image

from sdstudio.errors import InvalidRequest
from sdstudio.postprocess.watermark import DEFAULT_WATERMARK, add_watermark, decode_watermark


def test_compvis_message_round_trips_through_png(tmp_path):
    assert DEFAULT_WATERMARK == "StableDiffusionV1"
    image = draw_face(512)
    marked = add_watermark(image)
    difference = np.abs(np.asarray(marked).astype(int) - np.asarray(image).astype(int))
    assert difference.mean() < 2.0  # invisible: tiny average change
    marked.save(tmp_path / "marked.png")
    decoded = decode_watermark(Image.open(tmp_path / "marked.png"))
    assert decoded.text == "StableDiffusionV1" and decoded.matches(DEFAULT_WATERMARK)


def test_other_message_and_unmarked_image():
    image = draw_face(320)
    marked = add_watermark(image, "SDV2")
    assert decode_watermark(marked, 4).matches("SDV2")
    assert not decode_watermark(image).matches(DEFAULT_WATERMARK)


def test_small_image_is_refused_with_the_reason():
    with pytest.raises(InvalidRequest, match="too small"):
        add_watermark(noise_image(64, 64))
