"""LoRA training data: a folder of images with same-named .txt captions, kohya-style.

kohya-ss sd-scripts' DreamBooth layout is accepted: subfolders named `N_concept` repeat
their images N times per epoch (`10_star/img.png` counts ten times), and an image without
a caption file takes the concept name as its caption (kohya's class-token fallback).
Images directly in the folder repeat `--repeats` times.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sdstudio.errors import InvalidRequest

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_EXTENSIONS = (".txt", ".caption")
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class TrainingImage:
    """One image, its caption, how often an epoch shows it, and the folder it counts under."""

    path: Path
    caption: str
    repeats: int
    folder: str  # for ss_tag_frequency / ss_dataset_dirs (kohya keys them by folder name)


def _caption_for(image: Path, fallback: str) -> str:
    for extension in CAPTION_EXTENSIONS:
        candidate = image.with_suffix(extension)
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip()
    return fallback


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_training_folder(folder: str | Path, repeats: int = 1) -> list[TrainingImage]:
    """The images of a training folder with captions and repeat counts (kohya `N_concept` subfolders)."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidRequest(
            "data", f"training folder {root} does not exist; pass a folder of images with .txt captions"
        )
    if repeats < 1:
        raise InvalidRequest("repeats", "must be at least 1")
    images = [TrainingImage(p, _caption_for(p, ""), repeats, root.name) for p in _images_in(root)]
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        match = _REPEAT_FOLDER.match(sub.name)
        sub_repeats, concept = (int(match.group(1)), match.group(2)) if match else (repeats, sub.name)
        images.extend(
            TrainingImage(p, _caption_for(p, concept), max(1, sub_repeats), sub.name) for p in _images_in(sub)
        )
    if not images:
        raise InvalidRequest("data", f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root} or its N_concept subfolders")
    return images


def tag_frequency(images: list[TrainingImage]) -> dict[str, dict[str, int]]:
    """kohya's ss_tag_frequency: per folder, how many captions contain each comma-separated tag."""
    result: dict[str, Counter] = {}
    for image in images:
        counter = result.setdefault(image.folder, Counter())
        for tag in (t.strip() for t in image.caption.split(",")):
            if tag:
                counter[tag] += 1
    return {folder: dict(counter) for folder, counter in result.items()}


def dataset_dirs(images: list[TrainingImage]) -> dict[str, dict[str, int]]:
    """kohya's ss_dataset_dirs: per folder, its repeat count and number of images."""
    result: dict[str, dict[str, int]] = {}
    for image in images:
        entry = result.setdefault(image.folder, {"n_repeats": image.repeats, "img_count": 0})
        entry["img_count"] += 1
    return result
