"""The procedural scene dataset: deterministic, captions in the trained format, held-out combinations never trained."""

from __future__ import annotations

import numpy as np

from sdstudio.training import scenes


def test_scenes_are_deterministic_and_drawn_as_captioned():
    first = scenes.scene_batch(3, 5, 8)
    again = scenes.scene_batch(3, 5, 8)
    assert first == again
    assert all(np.array_equal(a.render(), b.render()) for a, b in zip(first, again))
    scene = first[0]
    image = scene.render()
    assert image.shape == (64, 64, 3)
    corner = image[0, 0].astype(int)
    assert np.abs(corner - np.array(scenes.COLOURS[scene.background])).max() <= 12
    caption = scene.caption()
    assert caption.startswith("a ") and caption.endswith(f"on a {scene.background} background")
    assert scene.colour in caption and scene.shape in caption and scene.colour != scene.background


def test_held_out_combinations_never_appear_in_training():
    held_out = set(scenes.HELD_OUT_LIST)
    train = set(scenes.TRAIN_COMBOS)
    assert held_out and not held_out & train
    assert 0.15 <= len(held_out) / (len(held_out) + len(train)) <= 0.25
    seen = {s.combo for i in range(20) for s in scenes.scene_batch(0, i, 32)}
    assert not seen & held_out
    assert {c[0] for c in train} == set(scenes.COLOUR_NAMES) and {c[1] for c in train} == set(scenes.SHAPES)
