"""A1111's prompt templates and the image dataset textual-inversion and hypernetwork training share.

Templates live in `DATA_DIR/textual_inversion_templates/*.txt` (A1111's folder and file names),
one prompt per line; `[name]` is replaced by the placeholder (the embedding's name) and
`[filewords]` by the image's caption: its same-named `.txt` file, else its file name without
leading numbers and dashes (A1111's rule). The standard set ships in the package and is copied
into a data dir the first time templates are used there.

`TemplateDataset` encodes every image once with the VAE and, per A1111's latent sampling method:
"once" draws one latent sample per image at load (seeded, so a resumed run sees the same one),
"deterministic" uses the posterior mean, "random" draws a fresh sample each time the image is used.
Every random choice of a batch (template line, tag drop-out and shuffle, random latents) comes from
the trainer's generator, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdstudio.errors import InvalidRequest
from sdstudio.training.lora_dataset import IMAGE_EXTENSIONS

TEMPLATES_FOLDER = "textual_inversion_templates"
STANDARD_TEMPLATES = (
    "none.txt",
    "style.txt",
    "style_filewords.txt",
    "subject.txt",
    "subject_filewords.txt",
    "hypernetwork.txt",
)
LATENT_SAMPLING_METHODS = ("once", "deterministic", "random")
_NUMBERS_AT_START = re.compile(r"^[-\d]+\s*")


def templates_dir(data_root: Path) -> Path:
    """`DATA_DIR/textual_inversion_templates`, filled with the standard set the first time it is asked for."""
    folder = Path(data_root) / TEMPLATES_FOLDER
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        bundled = resources.files("sdstudio.assets").joinpath(TEMPLATES_FOLDER)
        for name in STANDARD_TEMPLATES:
            with resources.as_file(bundled.joinpath(name)) as source:
                shutil.copyfile(source, folder / name)
    return folder


def list_templates(folder: Path) -> dict[str, Path]:
    """File name -> path of every template under `folder` (subfolders too, as A1111 lists them)."""
    found = sorted(p for p in Path(folder).rglob("*.txt") if p.is_file() and not p.name.startswith("."))
    return {p.relative_to(folder).as_posix(): p for p in found}


def read_template(folder: Path, filename: str, field: str = "template_filename") -> list[str]:
    """The non-empty lines of the template called `filename` in `folder`."""
    templates = list_templates(folder)
    path = templates.get(filename) or templates.get(f"{filename}.txt")
    if path is None:
        raise InvalidRequest(field, f"no prompt template {filename!r} in {folder}; choose one of {sorted(templates)}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise InvalidRequest(field, f"the prompt template {filename!r} has no lines")
    return lines


def filewords_for(image: Path) -> str:
    """An image's caption: its `.txt` file, else its name without leading numbers and dashes (A1111's rule)."""
    caption = image.with_suffix(".txt")
    if caption.is_file():
        return caption.read_text(encoding="utf-8").strip()
    return _NUMBERS_AT_START.sub("", image.stem)


def fill_template(line: str, placeholder: str, filewords: str) -> str:
    """A template line with `[name]` and `[filewords]` replaced."""
    return line.replace("[filewords]", filewords).replace("[name]", placeholder)


@dataclass(frozen=True)
class DatasetOptions:
    """How images become training examples (A1111's train fields of the same names)."""

    placeholder: str  # what [name] becomes
    training_width: int = 512
    training_height: int = 512
    varsize: bool = False  # keep each image's own size (rounded down to the latent grid)
    repeats: int = 1  # times each image counts per epoch
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0
    latent_sampling_method: str = "once"
    use_weight: bool = False  # the alpha channel weighs the loss
    seed: int = 0

    def check(self) -> None:
        """Reject impossible values, naming the field."""
        for name in ("training_width", "training_height", "repeats"):
            if int(getattr(self, name)) < 1:
                raise InvalidRequest(name, "must be at least 1")
        if not 0.0 <= self.tag_drop_out < 1.0:
            raise InvalidRequest("tag_drop_out", "must be from 0 up to (not including) 1")
        if self.latent_sampling_method not in LATENT_SAMPLING_METHODS:
            raise InvalidRequest(
                "latent_sampling_method",
                f"{self.latent_sampling_method!r} is not one of {', '.join(LATENT_SAMPLING_METHODS)}",
            )


@dataclass
class DatasetEntry:
    """One image: its caption and latent posterior (scaled), and its loss weight when alpha weighs it."""

    path: Path
    filewords: str
    mean: torch.Tensor
    std: torch.Tensor
    sample: torch.Tensor  # the latent used by "once" and "deterministic"
    weight: torch.Tensor | None


@dataclass
class TemplateBatch:
    """Latents [B, C, H, W], the prompt of each, and loss weights [B, 1, H, W] (None: uniform)."""

    latents: torch.Tensor
    texts: list[str]
    weights: torch.Tensor | None


def _load_pixels(path: Path, options: DatasetOptions, factor: int) -> tuple[torch.Tensor, Image.Image | None]:
    """[3, H, W] in [-1, 1] at the training size (or its own size with varsize), and the alpha channel if any."""
    with Image.open(path) as opened:
        alpha = opened.getchannel("A") if opened.mode == "RGBA" else None
        image = opened.convert("RGB")
    if options.varsize:
        size = (max(factor, image.width // factor * factor), max(factor, image.height // factor * factor))
    else:
        size = (options.training_width, options.training_height)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1), alpha


def _weight_map(alpha: Image.Image | None, latent_size: tuple[int, int]) -> torch.Tensor:
    """[1, h, w] loss weights from the alpha channel at latent size, mean 1 (all ones without alpha)."""
    if alpha is None:
        return torch.ones((1, latent_size[1], latent_size[0]))
    array = np.asarray(alpha.resize(latent_size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    weight = torch.from_numpy(array).unsqueeze(0)
    return weight / weight.mean().clamp(min=1e-6)


class TemplateDataset:
    """The images of a folder as latents, with template prompts drawn per use."""

    def __init__(
        self, data_root: str | Path, template_lines: list[str], options: DatasetOptions, vae: Any, scaling: float
    ):
        options.check()
        root = Path(data_root)
        if not root.is_dir():
            raise InvalidRequest("data_root", f"{root} is not a folder of training images")
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise InvalidRequest("data_root", f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}")
        self.options, self.lines = options, list(template_lines)
        self.entries = self._encode(paths, vae, scaling)

    @torch.no_grad()
    def _encode(self, paths: list[Path], vae: Any, scaling: float) -> list[DatasetEntry]:
        options = self.options
        device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        once = torch.Generator().manual_seed(options.seed)
        entries = []
        for path in paths:
            pixels, alpha = _load_pixels(path, options, factor)
            posterior = vae.encode(pixels.unsqueeze(0).to(device, dtype)).latent_dist
            mean = posterior.mean[0].float().cpu() * scaling
            std = posterior.std[0].float().cpu() * scaling
            sample = (
                mean
                if options.latent_sampling_method == "deterministic"
                else mean + std * torch.randn(mean.shape, generator=once)
            )
            weight = _weight_map(alpha, (mean.shape[2], mean.shape[1])) if options.use_weight else None
            entries.append(DatasetEntry(path, filewords_for(path), mean, std, sample, weight))
        return entries

    def __len__(self) -> int:
        """Examples per epoch: every image `repeats` times."""
        return len(self.entries) * self.options.repeats

    def example_indices(self) -> list[int]:
        """The entry index of each example of an epoch (what an epoch order shuffles)."""
        return [i for i in range(len(self.entries)) for _ in range(self.options.repeats)]

    def text_for(self, entry: DatasetEntry, generator: torch.Generator) -> str:
        """A template line drawn at random, filled with the placeholder and the (dropped-out, shuffled) tags."""
        options = self.options
        line = self.lines[int(torch.randint(len(self.lines), (1,), generator=generator))]
        tags = entry.filewords.split(",")  # joined back with "," as A1111 does: unchanged without drop-out or shuffle
        if options.tag_drop_out:
            keep = torch.rand(len(tags), generator=generator) > options.tag_drop_out
            tags = [tag for tag, kept in zip(tags, keep.tolist()) if kept]
        if options.shuffle_tags:
            tags = [tags[i] for i in torch.randperm(len(tags), generator=generator).tolist()]
        return fill_template(line, options.placeholder, ",".join(tags))

    def batch(self, picks: list[int], generator: torch.Generator) -> TemplateBatch:
        """The latents, prompts and weights of the entries `picks`."""
        entries = [self.entries[i] for i in picks]
        if len({tuple(e.mean.shape) for e in entries}) > 1:
            raise InvalidRequest("varsize", "images of different sizes cannot share a batch; use batch_size 1")
        latents = []
        for entry in entries:
            if self.options.latent_sampling_method == "random":
                latents.append(entry.mean + entry.std * torch.randn(entry.mean.shape, generator=generator))
            else:
                latents.append(entry.sample)
        texts = [self.text_for(entry, generator) for entry in entries]
        weights = None
        if self.options.use_weight:
            weights = torch.stack([e.weight for e in entries if e.weight is not None])
        return TemplateBatch(torch.stack(latents), texts, weights)
