"""Reading a generated scene back: background colour, object colour and shape.

Used to score the tiny model's prompt adherence (`benchmarks/eval_tiny.py`) and LoRA demos.
Colours come from pixel statistics: the background is the median of the image's border,
the object is every pixel far from it, and each is named by the nearest colour of the
scene palette. The shape comes from a small CNN trained on the object masks of the scene
generator's own images (noise added, so it tolerates a generated image's ragged edges).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import torch

from sdstudio.training import scenes

OBJECT_DISTANCE = 60.0  # RGB distance from the background above which a pixel is "object"
MIN_OBJECT_PIXELS = 12
RING_INSET = 2


@dataclasses.dataclass(frozen=True)
class SceneReading:
    """What the scorer sees in one image (None: no object found)."""

    background: str
    colour: str | None
    shape: str | None


def nearest_colour(rgb: np.ndarray, colours: Mapping[str, tuple[int, int, int]] = scenes.COLOURS) -> str:
    """The name of the colour (of the scene palette unless `colours` is given) closest to an RGB triple."""
    names = list(colours)
    palette = np.array([colours[name] for name in names], dtype=np.float32)
    return names[int(np.argmin(np.linalg.norm(palette - np.asarray(rgb, dtype=np.float32), axis=1)))]


def background_rgb(image: np.ndarray) -> np.ndarray:
    """Median colour of a 3-pixel ring just inside the border (a VAE's outermost pixels can be off-colour)."""
    array = np.asarray(image, dtype=np.float32)
    a, b = RING_INSET, RING_INSET + 3
    ring = np.concatenate(
        [
            array[a:b].reshape(-1, 3),
            array[-b:-a].reshape(-1, 3),
            array[:, a:b].reshape(-1, 3),
            array[:, -b:-a].reshape(-1, 3),
        ]
    )
    return np.median(ring, axis=0)


def object_mask(image: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the pixels far from the background colour."""
    array = np.asarray(image, dtype=np.float32)
    background = background_rgb(array) if background is None else background
    return np.linalg.norm(array - background, axis=-1) > OBJECT_DISTANCE


class ShapeClassifier:
    """A small CNN from a 64x64 object mask to a shape name, trained on rendered scenes.

    `extra_shapes` maps further shape names to renderers (scene -> uint8 image drawn with that
    shape instead of the scene's own); a LoRA demo uses it to recognise a star.
    """

    def __init__(
        self,
        seed: int = 0,
        scenes_count: int = 3000,
        steps: int = 400,
        extra_shapes: dict[str, Callable[[scenes.Scene], np.ndarray]] | None = None,
    ):
        self.extra_shapes = dict(extra_shapes or {})
        self.shapes = (*scenes.SHAPES, *self.extra_shapes)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.network = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 48, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(48, 48, 3, stride=1, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveMaxPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(48, len(self.shapes)),
        )
        masks, labels = self._training_set(seed, scenes_count * len(self.shapes) // len(scenes.SHAPES))
        optimizer = torch.optim.Adam(self.network.parameters(), lr=3e-3)
        for _ in range(steps):
            index = torch.randint(0, len(masks), (64,), generator=generator)
            loss = torch.nn.functional.cross_entropy(self.network(masks[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.network.eval().requires_grad_(False)

    def _training_set(self, seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seed)
        batch = scenes.scene_batch(seed, 0, count, "all")
        masks, labels = [], []
        for scene in batch:
            if self.extra_shapes:
                # Every class equally often, drawn with the scene's colours, size and place.
                label = int(rng.integers(len(self.shapes)))
                name = self.shapes[label]
                if name in self.extra_shapes:
                    image = self.extra_shapes[name](scene).astype(np.float32)
                else:
                    image = dataclasses.replace(scene, shape=name).render().astype(np.float32)
                if rng.random() < 0.5:
                    image = _box_blur(image)  # generated shapes have soft edges and blunt corners
            else:
                label = scenes.SHAPES.index(scene.shape)
                image = scene.render().astype(np.float32)
            image += rng.normal(0, rng.uniform(0, 25), size=image.shape)  # generated images are never clean
            masks.append(object_mask(np.clip(image, 0, 255)))
            labels.append(label)
        return _mask_tensor(masks), torch.tensor(labels)

    def predict(self, masks: list[np.ndarray]) -> list[str]:
        """The shape name for each mask."""
        with torch.no_grad():
            logits = self.network(_mask_tensor(masks))
        return [self.shapes[int(i)] for i in logits.argmax(dim=1)]


def _box_blur(image: np.ndarray) -> np.ndarray:
    """A 3x3 box blur of an HxWx3 float image (edges repeated)."""
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    height, width = image.shape[:2]
    # start: an array, not sum's int 0, so the result is typed as the array it always is
    return (
        sum(
            (padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)),
            start=np.zeros_like(image),
        )
        / 9.0
    )


def _mask_tensor(masks: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(masks).astype(np.float32)).unsqueeze(1)


def object_rgb(image: np.ndarray, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The object's colour and mask (None: no object found).

    The colour comes from the object's core: pixels farther from the background than the mask's
    median distance, which skips the anti-aliased rim.
    """
    array = np.asarray(image, dtype=np.float32)[..., :3]
    background = background_rgb(array) if background is None else background
    mask = object_mask(array, background)
    if mask.sum() < MIN_OBJECT_PIXELS:
        return None
    distance = np.linalg.norm(array - background, axis=-1)
    core = mask & (distance >= np.median(distance[mask]))
    return np.median(array[core], axis=0), mask


def read_scenes(images: list[np.ndarray], classifier: ShapeClassifier | None) -> list[SceneReading]:
    """Background colour, object colour and shape of each image (uint8 HxWx3, 64x64); no classifier: colours only."""
    readings: list[SceneReading] = []
    masks, with_object = [], []
    for index, image in enumerate(images):
        array = np.asarray(image, dtype=np.float32)[..., :3]
        background = background_rgb(array)
        found = object_rgb(array, background)
        if found is None:
            readings.append(SceneReading(nearest_colour(background), None, None))
            continue
        readings.append(SceneReading(nearest_colour(background), nearest_colour(found[0]), None))
        masks.append(found[1])
        with_object.append(index)
    for index, shape in zip(with_object, classifier.predict(masks) if masks and classifier is not None else []):
        reading = readings[index]
        readings[index] = SceneReading(reading.background, reading.colour, shape)
    return readings
