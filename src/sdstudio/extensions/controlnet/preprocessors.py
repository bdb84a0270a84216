"""Preprocessors (stand-in: "none" and "canny" only, with the shared interface; replaced by cnprep's table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sdstudio.errors import NotFound


@dataclass(frozen=True)
class SliderSpec:
    """One slider of a preprocessor as sd-webui-controlnet's module_detail describes it."""

    name: str
    value: float
    min: float
    max: float
    step: float = 1.0


@dataclass(frozen=True)
class Preprocessor:
    """A preprocessor: `run(image HxWx3 uint8, processor_res, threshold_a, threshold_b) -> HxWx3 uint8`."""

    name: str
    run: Callable[[np.ndarray, int, float, float], np.ndarray]
    sliders: tuple[SliderSpec, ...]
    weight_files: tuple[str, ...] = ()


def _none(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    return image


def _canny(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    import cv2

    edges = cv2.Canny(np.ascontiguousarray(image), int(a), int(b))
    return np.repeat(edges[:, :, None], 3, axis=2)


PREPROCESSORS: dict[str, Preprocessor] = {
    "none": Preprocessor("none", _none, ()),
    "canny": Preprocessor(
        "canny",
        _canny,
        (
            SliderSpec("Preprocessor Resolution", 512, 64, 2048),
            SliderSpec("Canny Low Threshold", 100, 1, 255),
            SliderSpec("Canny High Threshold", 200, 1, 255),
        ),
    ),
}


def run_preprocessor(
    name: str,
    image: Image.Image,
    processor_res: int = 512,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
) -> Image.Image:
    """The control map of `image` by the named preprocessor (None thresholds: the module's defaults)."""
    preprocessor = PREPROCESSORS.get(name)
    if preprocessor is None:
        raise NotFound(f"ControlNet preprocessor {name!r} is not known; known: {', '.join(PREPROCESSORS)}")
    sliders = list(preprocessor.sliders[1:]) + [None, None]
    a = threshold_a if threshold_a is not None else (sliders[0].value if sliders[0] else 0.0)
    b = threshold_b if threshold_b is not None else (sliders[1].value if sliders[1] else 0.0)
    out = preprocessor.run(np.asarray(image.convert("RGB")), processor_res, a, b)
    return Image.fromarray(out.astype(np.uint8))


def module_list(models_dir: Path | None) -> list[str]:
    """The preprocessors usable here (sd-webui-controlnet's names)."""
    return list(PREPROCESSORS)


def module_detail(models_dir: Path | None) -> dict[str, Any]:
    """sd-webui-controlnet's module_detail: per module its sliders and whether it takes a model."""
    return {
        name: {
            "model_free": False,
            "sliders": [
                {"name": s.name, "value": s.value, "min": s.min, "max": s.max, "step": s.step}
                for s in preprocessor.sliders
            ],
        }
        for name, preprocessor in PREPROCESSORS.items()
    }
