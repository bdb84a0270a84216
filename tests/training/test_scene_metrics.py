"""The scene scorer reads rendered scenes correctly (it is what the tiny model's evaluation trusts)."""

from __future__ import annotations

import numpy as np

from sdstudio.training import scene_metrics, scenes


def test_scorer_reads_rendered_scenes_and_reports_a_blank_image():
    classifier = scene_metrics.ShapeClassifier(scenes_count=1200, steps=250)
    batch = scenes.scene_batch(11, 0, 150, "all")
    readings = scene_metrics.read_scenes([s.render() for s in batch], classifier)
    assert all(r.background == s.background and r.colour == s.colour for r, s in zip(readings, batch))
    assert np.mean([r.shape == s.shape for r, s in zip(readings, batch)]) >= 0.95

    blank = np.full((64, 64, 3), scenes.COLOURS["green"], dtype=np.uint8)
    assert scene_metrics.read_scenes([blank], classifier) == [scene_metrics.SceneReading("green", None, None)]
