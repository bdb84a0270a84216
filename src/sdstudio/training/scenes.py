"""Procedural training scenes for the bundled tiny model: one shape on a plain background.

A scene is a 64x64 RGB image of a circle, square or triangle of one colour on a background of
another, with a size (small/large) and one of nine positions, captioned
"a {size?} {colour} {shape} {position?} on a {colour} background". The size and position
phrases are optional in a caption (the image always has both), so the model learns prompts
with and without them.

About 20% of the (object colour, shape, background colour) combinations are held out of
training (`HELD_OUT_COMBOS`): each (object colour, shape) pair is held out with exactly one
background, chosen so that every pair of attributes (colour+shape, colour+background,
shape+background) still occurs in training. Generation is deterministic from a seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 65, 225),
    "yellow": (240, 215, 35),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# name -> range of the half extent in pixels (a circle's radius).
SIZES: dict[str, tuple[int, int]] = {"small": (7, 9), "large": (13, 16)}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
# phrase -> (column, row) on a 3x3 grid.
POSITIONS: dict[str, tuple[int, int]] = {
    "at the top left": (0, 0),
    "at the top": (1, 0),
    "at the top right": (2, 0),
    "at the left": (0, 1),
    "in the center": (1, 1),
    "at the right": (2, 1),
    "at the bottom left": (0, 2),
    "at the bottom": (1, 2),
    "at the bottom right": (2, 2),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)
_MARGIN = 3
_JITTER = 2
_COLOUR_JITTER = 6
_SUPERSAMPLE = 2

Combo = tuple[str, str, str]  # (object colour, shape, background colour)


def all_combos() -> list[Combo]:
    """Every (object colour, shape, background colour) with object colour != background."""
    return [(c, s, b) for c, s, b in itertools.product(COLOUR_NAMES, SHAPES, COLOUR_NAMES) if c != b]


def _held_out() -> frozenset[Combo]:
    # For colour index o and shape index s the background is o + 1 + 2s (mod 6): never o, and the
    # three shapes use three different offsets, so each (colour, background) pair loses at most
    # one shape and each (colour, shape) pair loses exactly one of its five backgrounds.
    n = len(COLOUR_NAMES)
    return frozenset(
        (COLOUR_NAMES[o], shape, COLOUR_NAMES[(o + 1 + 2 * s) % n]) for o in range(n) for s, shape in enumerate(SHAPES)
    )


HELD_OUT_COMBOS: frozenset[Combo] = _held_out()
TRAIN_COMBOS: tuple[Combo, ...] = tuple(c for c in all_combos() if c not in HELD_OUT_COMBOS)
HELD_OUT_LIST: tuple[Combo, ...] = tuple(c for c in all_combos() if c in HELD_OUT_COMBOS)
SPLITS = {"train": TRAIN_COMBOS, "heldout": HELD_OUT_LIST, "all": tuple(all_combos())}


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw one image and write its captions."""

    colour: str
    shape: str
    background: str
    size: str
    position: str
    half_extent: int
    center: tuple[int, int]
    colour_jitter: tuple[int, int, int] = (0, 0, 0)

    @property
    def combo(self) -> Combo:
        return (self.colour, self.shape, self.background)

    def caption(self, with_size: bool = True, with_position: bool = True) -> str:
        """'a {size?} {colour} {shape} {position?} on a {colour} background'."""
        words = ["a"]
        if with_size:
            words.append(self.size)
        words += [self.colour, self.shape]
        if with_position:
            words.append(self.position)
        words += ["on", "a", self.background, "background"]
        return " ".join(words)

    def render(self) -> np.ndarray:
        """The scene as a uint8 array (64, 64, 3), anti-aliased by 2x supersampling."""
        return render_scene(self)


def caption_for(colour: str, shape: str, background: str, size: str | None = None, position: str | None = None) -> str:
    """A caption in the training format (size and position phrases optional)."""
    words = ["a"] + ([size] if size else []) + [colour, shape] + ([position] if position else [])
    return " ".join(words + ["on", "a", background, "background"])


def _center_for(position: str, half_extent: int, rng: np.random.Generator) -> tuple[int, int]:
    column, row = POSITIONS[position]
    low, high = _MARGIN + half_extent, IMAGE_SIZE - _MARGIN - half_extent
    anchors = (low, IMAGE_SIZE // 2, high)
    jitter = rng.integers(-_JITTER, _JITTER + 1, size=2)
    x = int(np.clip(anchors[column] + jitter[0], low, high))
    y = int(np.clip(anchors[row] + jitter[1], low, high))
    return x, y


def sample_scene(
    rng: np.random.Generator,
    combos: tuple[Combo, ...] = TRAIN_COMBOS,
    size: str | None = None,
    position: str | None = None,
) -> Scene:
    """A random scene from `combos`; size and position random unless given."""
    colour, shape, background = combos[int(rng.integers(len(combos)))]
    size = size or SIZE_NAMES[int(rng.integers(len(SIZE_NAMES)))]
    position = position or POSITION_NAMES[int(rng.integers(len(POSITION_NAMES)))]
    low, high = SIZES[size]
    half_extent = int(rng.integers(low, high + 1))
    center = _center_for(position, half_extent, rng)
    red, green, blue = (int(v) for v in rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3))
    return Scene(colour, shape, background, size, position, half_extent, center, (red, green, blue))


def _jittered(rgb: tuple[int, int, int], jitter: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = (int(np.clip(c + j, 0, 255)) for c, j in zip(rgb, jitter))
    return red, green, blue


def render_scene(scene: Scene, colours: Mapping[str, tuple[int, int, int]] = COLOURS) -> np.ndarray:
    """Draw `scene` (uint8, 64x64x3); `colours` may add colours the model never saw (benchmarks of teaching one)."""
    k = _SUPERSAMPLE
    size = IMAGE_SIZE * k
    image = Image.new("RGB", (size, size), _jittered(colours[scene.background], scene.colour_jitter))
    draw = ImageDraw.Draw(image)
    fill = _jittered(colours[scene.colour], scene.colour_jitter)
    cx, cy = (scene.center[0] + 0.5) * k, (scene.center[1] + 0.5) * k
    r = scene.half_extent * k
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        h = r * 0.9  # similar area to the circle
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif scene.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    else:
        raise ValueError(f"unknown shape {scene.shape!r}; use one of {SHAPES}")
    return np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX), dtype=np.uint8)


def scene_batch(seed: int, index: int, count: int, split: str = "train") -> list[Scene]:
    """`count` scenes determined by (seed, index) alone: the same call always gives the same scenes."""
    rng = np.random.default_rng([int(seed), int(index), 7])
    return [sample_scene(rng, SPLITS[split]) for _ in range(count)]


def images_to_tensor(images: list[np.ndarray]):
    """uint8 HWC images -> float tensor (N, 3, H, W) in [-1, 1], as the SD VAE expects."""
    import torch

    array = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
