"""The hypernetwork service: files in models/hypernetworks, the `<hypernet:NAME:WEIGHT>` tag, creating new ones.

As A1111 (`list_hypernetworks`, `extra_networks_hypernet.py`): every `.pt` under the folder is a
hypernetwork named by its file name without extension; a prompt's `<hypernet:NAME>` /
`<hypernet:NAME:MULTIPLIER>` tags (multiplier 1 when left out) apply those hypernetworks to the
batch; the tag stays in the prompt and is all the infotext records. An unknown name, or a file
that cannot be read or is refused as unsafe, is a warning and the job goes on without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdstudio.config import MODEL_KINDS
from sdstudio.engine.job_context import GenerationModel
from sdstudio.errors import InvalidRequest, SdStudioError
from sdstudio.extensions.hypernetwork.apply import hypernetworks_applied
from sdstudio.extensions.hypernetwork.network import (
    DEFAULT_LAYER_STRUCTURE,
    Hypernetwork,
    HypernetworkStructure,
    load_hypernetwork_file,
)
from sdstudio.models.memory import ModelMemory
from sdstudio.prompts.extra_networks import ExtraNetworkParams, extract_extra_networks

TAG_TYPE = "hypernet"
MEMORY_KIND = "hypernetwork"
A1111_SIZES = (768, 320, 640, 1280)  # the sizes A1111's Create hypernetwork form ticks by default


@dataclass(frozen=True)
class HypernetTag:
    """One `<hypernet:NAME:MULTIPLIER>` request."""

    name: str
    multiplier: float = 1.0


def read_hypernet_tag(params: ExtraNetworkParams) -> HypernetTag:
    """`<hypernet:NAME[:MULTIPLIER]>`: the first two arguments, as A1111 reads them."""
    items = params.items
    name = items[0].strip() if items else ""
    if not name:
        raise InvalidRequest("prompt", "a <hypernet:...> tag needs a name first, as in <hypernet:NAME:0.8>")
    if len(items) < 2:
        return HypernetTag(name)
    try:
        multiplier = float(items[1])
    except ValueError:
        multiplier = math.nan
    if not math.isfinite(multiplier):
        raise InvalidRequest("prompt", f"<hypernet:{':'.join(items)}>: {items[1]!r} is not a number")
    return HypernetTag(name, multiplier)


def hypernet_tags(prompt: str) -> list[HypernetTag]:
    """The hypernetworks a prompt's `<hypernet:...>` tags ask for, in prompt order."""
    _, tags = extract_extra_networks(prompt)
    return [read_hypernet_tag(params) for params in tags.get(TAG_TYPE, [])]


@dataclass(frozen=True)
class HypernetworkOnDisk:
    """A hypernetwork file as listed: its name (file name without `.pt`) and path."""

    name: str
    path: Path


@dataclass
class HypernetworkReport:
    """What a job got: names applied and warnings for the result."""

    applied: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class HypernetworkLibrary:
    """Hypernetwork files in one folder, loaded on demand and kept by the memory owner."""

    def __init__(self, folder: Path, memory: ModelMemory | None = None):
        self.folder = Path(folder)
        self.memory = memory if memory is not None else ModelMemory(limits={MEMORY_KIND: 4})

    def available(self) -> list[HypernetworkOnDisk]:
        """Every `.pt` under the folder, A1111's order (case-insensitive); a file called None.pt is skipped."""
        return [
            HypernetworkOnDisk(path.stem, path)
            for path in MODEL_KINDS["hypernetwork"].files_in(self.folder)
            if path.stem != "None"
        ]

    def find(self, name: str) -> HypernetworkOnDisk | None:
        """The file called `name` (without extension), or None."""
        return next((entry for entry in self.available() if entry.name == name), None)

    def load(self, entry: HypernetworkOnDisk) -> Hypernetwork:
        """The file's hypernetwork (kept by the memory owner while the file is unchanged)."""
        key = f"{MEMORY_KIND}:{entry.path}:{entry.path.stat().st_mtime_ns}"
        return self.memory.get_or_load(
            key, MEMORY_KIND, lambda: load_hypernetwork_file(entry.path), size_of=lambda net: net.tensor_bytes()
        )

    def resolve(self, tags: Sequence[HypernetTag], report: HypernetworkReport) -> list[tuple[Hypernetwork, float]]:
        """Hypernetworks for the requested names (their names in `report.applied`); others become warnings."""
        networks = []
        for tag in tags:
            entry = self.find(tag.name)
            if entry is None:
                report.warnings.append(f"hypernetwork {tag.name!r} not found in {self.folder}; generated without it")
                continue
            if tag.multiplier == 0:
                continue  # weight 0: as if the tag were absent
            try:
                net = self.load(entry)
            except (SdStudioError, OSError) as exc:
                report.warnings.append(f"hypernetwork {tag.name!r}: {exc}; generated without it")
                continue
            networks.append((net, tag.multiplier))
            report.applied.append(tag.name)
        return networks

    @contextmanager
    def apply(self, unet: torch.nn.Module, tags: Sequence[HypernetTag]) -> Iterator[HypernetworkReport]:
        """Apply the requested hypernetworks for the block's duration; the UNet runs as before after it."""
        report = HypernetworkReport()
        networks = self.resolve(tags, report) if tags else []
        with hypernetworks_applied(unet, networks) as applied:
            for number in applied.unmatched:
                report.warnings.append(
                    f"hypernetwork {report.applied[number]!r} has no layer for this model's attention widths "
                    f"({', '.join(str(w) for w in attention_widths(unet))}); it has no effect"
                )
            yield report


def attention_widths(unet: torch.nn.Module) -> list[int]:
    """The context widths the UNet's attention projections take (what a hypernetwork needs layers for)."""
    from sdstudio.extensions.hypernetwork.apply import attention_projections

    return sorted({to_k.in_features for _, to_k, _ in attention_projections(unet)})


class HypernetworkWarnings(dict):
    """A batch hook's infotext parameters (none: A1111 records hypernetworks in the prompt) and its warnings."""

    def __init__(self, warnings: list[str]):
        super().__init__()
        self.warnings = list(warnings)


class HypernetworkBatchHook:
    """The engine's `BatchHook` for `<hypernet:...>` tags: the batch's first prompt's tags, as A1111."""

    def __init__(self, library: HypernetworkLibrary):
        self.library = library

    @contextmanager
    def __call__(
        self, model: GenerationModel, prompts: list[str], negative_prompts: list[str]
    ) -> Iterator[HypernetworkWarnings | None]:
        tags = hypernet_tags(prompts[0]) if prompts else []
        if not tags:
            yield None
            return
        with self.library.apply(model.unet, tags) as report:
            yield HypernetworkWarnings(report.warnings)


def list_hypernetworks(library: HypernetworkLibrary) -> list[dict[str, Any]]:
    """What A1111's `GET /sdapi/v1/hypernetworks` returns: `[{"name", "path"}]`."""
    return [{"name": entry.name, "path": str(entry.path)} for entry in library.available()]


# -- creating --------------------------------------------------------------------------------


def _numbers(value: Any, field_name: str) -> list[float]:
    """A list of numbers from a list or from A1111's comma-separated text ("1, 2, 1")."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InvalidRequest(field_name, "must be a list of numbers or comma-separated text such as 1, 2, 1")
    try:
        numbers = [float(str(item).strip()) for item in items]
    except ValueError:
        raise InvalidRequest(field_name, f"{value!r} is not a list of numbers such as 1, 2, 1") from None
    if not all(math.isfinite(n) for n in numbers):
        raise InvalidRequest(field_name, "numbers must be finite")
    return numbers


def clean_hypernetwork_name(name: str) -> str:
    """A1111's file name: letters, digits and `._- ` kept, the rest dropped; InvalidRequest when nothing is left."""
    cleaned = "".join(ch for ch in str(name) if ch.isalnum() or ch in "._- ").strip()
    if not cleaned.strip(". "):
        raise InvalidRequest("name", "needs at least one letter or digit")
    if len(cleaned.encode()) > 200:
        raise InvalidRequest("name", "is too long for a file name (at most 200 bytes)")
    return cleaned


def create_hypernetwork(
    folder: Path,
    name: str,
    enable_sizes: Sequence[int | str] = A1111_SIZES,
    layer_structure: str | Sequence[float] = DEFAULT_LAYER_STRUCTURE,
    activation_func: str | None = "linear",
    weight_init: str = "Normal",
    add_layer_norm: bool = False,
    use_dropout: bool = False,
    dropout_structure: str | Sequence[float] | None = None,
    overwrite_old: bool = False,
) -> Path:
    """Write a new, randomly initialised hypernetwork as A1111's `create_hypernetwork` does; returns its path."""
    cleaned = clean_hypernetwork_name(name)
    path = Path(folder) / f"{cleaned}.pt"
    layers = tuple(_numbers(layer_structure, "layer_structure"))
    try:
        sizes = [int(str(size).strip()) for size in enable_sizes]
    except (TypeError, ValueError):
        raise InvalidRequest("enable_sizes", f"{enable_sizes!r} is not a list of widths such as 768, 320") from None
    if not sizes or any(not 1 <= size <= 8192 for size in sizes):
        raise InvalidRequest("enable_sizes", "needs one or more widths between 1 and 8192, such as 768, 320")
    # A1111: the given dropout structure counts only with use_dropout; otherwise no dropout anywhere.
    dropout = _numbers(dropout_structure, "dropout_structure") if use_dropout and dropout_structure else []
    structure = HypernetworkStructure(
        layer_structure=layers,
        activation_func=activation_func or "linear",
        weight_init=weight_init,
        add_layer_norm=add_layer_norm,
        dropout_structure=tuple(dropout) if dropout else (0.0,) * len(layers),
    )
    net = Hypernetwork.new(cleaned, list(dict.fromkeys(sizes)), structure, use_dropout=use_dropout)
    if path.exists() and not overwrite_old:
        raise InvalidRequest("name", f"{path.name} already exists in {folder}; choose another name or overwrite_old")
    try:
        net.save(path, replace=overwrite_old)
    except FileExistsError:
        raise InvalidRequest("name", f"{path.name} already exists in {folder}; choose another name") from None
    return path
