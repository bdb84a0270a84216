"""Inpainting's "only masked" crop: the region grows to the processing aspect ratio and stays inside the image."""

from __future__ import annotations

import pytest

from sdstudio.engine.images import expand_crop_region


@pytest.mark.parametrize(
    ("region", "image_size", "expected"),
    [
        ((10, 10, 30, 20), (100, 100), (10, 5, 30, 25)),  # wide region: grows in height about its centre
        ((10, 90, 30, 100), (100, 100), (10, 80, 30, 100)),  # at the bottom edge: shifted up
        ((0, 10, 10, 50), (100, 100), (0, 10, 40, 50)),  # tall region at the left edge: grows right
        ((0, 0, 100, 10), (100, 20), (0, 0, 100, 20)),  # cannot reach the ratio: the whole image height
    ],
)
def test_crop_region_grows_to_a_square_inside_the_image(region, image_size, expected):
    assert expand_crop_region(region, 64, 64, *image_size) == expected


def test_crop_region_follows_a_wide_processing_size():
    assert expand_crop_region((40, 40, 60, 60), 128, 64, 200, 200) == (30, 40, 70, 60)
