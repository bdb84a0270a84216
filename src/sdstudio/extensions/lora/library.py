"""The LoRA service: finds LoRA files, applies the ones a prompt names, lists them as A1111 does.

The engine uses one `LoraLibrary` (built in the composition root over `models/Lora` and `models/LyCORIS`) per job:

    activations = activations_from_prompt(prompts[0])           # <lora:NAME:W>, <lora:NAME:TE:UNET>
    with library.apply(unet, text_encoders, activations, on_text_encoders_changed=encoder.clear_cache) as report:
        ... encode prompts, sample ...
    result.warnings += report.warnings
    extra_params.update(report.infotext_params())                # "Lora hashes": "name: 0123456789ab"

Names resolve like A1111's `available_network_aliases`: file name without extension, then
the `ss_output_name` alias. An unknown name is a warning; the job goes on without it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdstudio.config import MODEL_KINDS, find_preview
from sdstudio.engine.job_context import GenerationModel
from sdstudio.errors import SdStudioError
from sdstudio.extensions.lora.apply import LoadedNetwork, apply_loras
from sdstudio.extensions.lora.files import LoraOnDisk, load_lora_tensors
from sdstudio.extensions.lora.networks import ParsedLora, parse_lora_state_dict
from sdstudio.models.memory import ModelMemory, module_bytes
from sdstudio.models.safe_pickle import check_pickle_file
from sdstudio.prompts.extra_networks import LoraTag, extract_extra_networks, read_lora_tag

# A1111 registers the Lora extra network as "lora" and also answers to "lyco" (lora_script.py).
LORA_TAG_TYPES = ("lora", "lyco")


# One `<lora:...>` request (file name, text-encoder and UNet multipliers, dyn dim) is exactly
# what the prompt layer reads from the tag.
LoraActivation = LoraTag


def activations_from_prompt(prompt: str) -> list[LoraActivation]:
    """The LoRAs a prompt's `<lora:...>` / `<lyco:...>` tags ask for, in prompt order."""
    _, tags = extract_extra_networks(prompt)
    return [read_lora_tag(params) for kind in LORA_TAG_TYPES for params in tags.get(kind, [])]


@dataclass
class LoraReport:
    """What a job got: names applied, warnings for the result, hashes for the infotext."""

    applied: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # name as written in the prompt -> shorthash
    adapter_modules: int = 0
    merged_modules: int = 0

    def infotext_params(self) -> dict[str, str]:
        """`{"Lora hashes": "name: hash, ..."}` when any LoRA with a hash was applied (A1111 option on)."""
        return {"Lora hashes": format_lora_hashes(self.hashes)} if self.hashes else {}


def format_lora_hashes(hashes: dict[str, str]) -> str:
    """A1111's `Lora hashes` value: `alias: shorthash` joined by ", ", ':' and ',' removed from aliases."""
    return ", ".join(f"{name.replace(':', '').replace(',', '')}: {short}" for name, short in hashes.items())


def parse_lora_hashes(value: str) -> dict[str, str]:
    """`"a: 0123, b: 4567"` -> {"a": "0123", "b": "4567"} (A1111 lora_script.infotext_pasted)."""
    parsed: dict[str, str] = {}
    for item in value.split(","):
        name, sep, short = item.strip().partition(":")
        if sep and name.strip():
            parsed[name.strip()] = short.strip()
    return parsed


_TAG_NAME = re.compile(r"<lora:([^:]+?):")
MEMORY_KIND = "lora"


def parsed_lora_bytes(parsed: ParsedLora) -> int:
    """Bytes of a parsed LoRA file's tensors."""
    return sum(module_bytes(network.tensors) for network in parsed.modules.values())


class LoraLibrary:
    """LoRA files in one or more folders (or from the model registry), parsed on demand with a small cache."""

    def __init__(
        self,
        folders: str | os.PathLike | Iterable[str | os.PathLike] | None,
        memory: ModelMemory | None = None,
        strategy: str = "adapters",
    ):
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        self.folders = [Path(folder) for folder in folders or ()]
        self.memory = memory if memory is not None else ModelMemory(limits={MEMORY_KIND: 4})
        self.strategy = strategy
        self._lock = threading.Lock()
        self._known: dict[Path, tuple[int, LoraOnDisk]] = {}

    # -- finding files -----------------------------------------------------------------------

    def _paths(self) -> list[Path]:
        found = [path for folder in self.folders for path in MODEL_KINDS["lora"].files_in(folder)]
        return sorted(found, key=lambda path: str(path).lower())

    def available(self) -> list[LoraOnDisk]:
        """Every LoRA file, read afresh when it changed (metadata only; hashes are computed when needed)."""
        result = []
        with self._lock:
            seen = set()
            for path in self._paths():
                try:
                    stamp = path.stat().st_mtime_ns
                except OSError:
                    continue
                seen.add(path)
                known = self._known.get(path)
                if known is None or known[0] != stamp:
                    self._known[path] = (stamp, describe_lora_file(path))
                result.append(self._known[path][1])
            for path in list(self._known):
                if path not in seen:
                    del self._known[path]
        return result

    def find(self, name: str) -> LoraOnDisk | None:
        """By file name (without extension), then by alias, as A1111's available_network_aliases."""
        entries = self.available()
        for entry in entries:
            if entry.name == name:
                return entry
        for entry in entries:
            if entry.alias == name:
                return entry
        return None

    def find_by_shorthash(self, shorthash: str) -> LoraOnDisk | None:
        """The file whose short hash is this one (for pasting infotext)."""
        for entry in self.available():
            if entry.shorthash == shorthash:
                return entry
        return None

    # -- loading and applying ----------------------------------------------------------------

    def load(self, entry: LoraOnDisk) -> ParsedLora:
        """The file's networks, parsed (kept by the memory owner, keyed by path and modification time)."""
        key = f"{MEMORY_KIND}:{entry.path}:{entry.path.stat().st_mtime_ns}"
        return self.memory.get_or_load(
            key, MEMORY_KIND, lambda: parse_lora_state_dict(load_lora_tensors(entry.path)), size_of=parsed_lora_bytes
        )

    def _parsed(self, entry: LoraOnDisk) -> ParsedLora | None:
        """The file's networks, or None with `entry.error` saying why (listed so until the file changes)."""
        if not entry.error:
            try:
                return self.load(entry)
            except SdStudioError as exc:
                entry.error = str(exc)
        return None

    def resolve(self, activations: Sequence[LoraActivation], report: LoraReport) -> list[LoadedNetwork]:
        """Files for the requested names; unknown or unreadable ones become warnings."""
        networks: list[LoadedNetwork] = []
        for activation in activations:
            entry = self.find(activation.name)
            if entry is None:
                where = ", ".join(str(folder) for folder in self.folders) or "the model registry"
                report.warnings.append(f"LoRA {activation.name!r} not found in {where}; generated without it")
                continue
            if activation.te_multiplier == 0 and activation.unet_multiplier == 0:
                continue  # weight 0: a no-op, as if the tag were absent
            parsed = self._parsed(entry)
            if parsed is None:
                report.warnings.append(f"LoRA {activation.name!r}: {entry.error}; generated without it")
                continue
            if activation.dyn_dim is not None:
                report.warnings.append(
                    f"LoRA {activation.name!r}: dyn={activation.dyn_dim} is not supported; the full rank is used"
                )
            if parsed.unknown_keys:
                report.warnings.append(
                    f"LoRA {activation.name!r}: {len(parsed.unknown_keys)} key(s) in no known layout were ignored "
                    f"(e.g. {parsed.unknown_keys[0]})"
                )
            networks.append(
                LoadedNetwork(activation.name, parsed, activation.te_multiplier, activation.unet_multiplier)
            )
            report.applied.append(activation.name)
            try:
                report.hashes[activation.name] = entry.shorthash
            except OSError:
                pass
        return networks

    @contextmanager
    def apply(
        self,
        unet: torch.nn.Module | None,
        text_encoders: Sequence[torch.nn.Module],
        activations: Sequence[LoraActivation],
        on_text_encoders_changed: Callable[[], None] | None = None,
    ) -> Iterator[LoraReport]:
        """Apply the requested LoRAs for the block's duration; the model is exactly restored on exit."""
        report = LoraReport()
        networks = self.resolve(activations, report) if activations else []
        with apply_loras(unet, text_encoders, networks, self.strategy, on_text_encoders_changed) as stats:
            report.warnings.extend(stats.skipped)
            report.adapter_modules, report.merged_modules = stats.adapter_modules, stats.merged_modules
            yield report

    def restore_names(self, prompt: str, hashes: dict[str, str]) -> str:
        """Rewrite `<lora:ALIAS:` to the local name of the file with the recorded hash (A1111 infotext_pasted)."""

        def replace(match: re.Match) -> str:
            short = hashes.get(match.group(1))
            entry = self.find_by_shorthash(short) if short else None
            return f"<lora:{entry.alias}:" if entry is not None else match.group(0)

        return _TAG_NAME.sub(replace, prompt)


@contextmanager
def lora_applied(
    unet: torch.nn.Module | None,
    text_encoders: Sequence[torch.nn.Module],
    activations: Sequence[LoraActivation],
    library: LoraLibrary,
    on_text_encoders_changed: Callable[[], None] | None = None,
) -> Iterator[LoraReport]:
    """`library.apply(...)` as a function: LoRAs on for the block, exactly off after it."""
    with library.apply(unet, text_encoders, activations, on_text_encoders_changed) as report:
        yield report


def describe_lora_file(path: Path) -> LoraOnDisk:
    """A LoRA file as listed; one that cannot be read, or whose pickle asks for code, carries the reason.

    Pickled files are only scanned here (nothing is unpickled); loading checks them again.
    """
    try:
        entry = LoraOnDisk.from_path(path, path.stem)
        if path.suffix.lower() != ".safetensors":
            check_pickle_file(path)
    except SdStudioError as exc:
        entry = LoraOnDisk(name=path.stem, path=path, error=str(exc))
    return entry


def lora_json(entry: LoraOnDisk) -> dict[str, Any]:
    """One item of A1111's `GET /sdapi/v1/loras`: name, alias, path, metadata (and sdstudio's `error`, if any)."""
    item: dict[str, Any] = {
        "name": entry.name,
        "alias": entry.alias,
        "path": str(entry.path),
        "metadata": entry.metadata,
    }
    if entry.error:
        item["error"] = entry.error
    return item


def list_loras(library: LoraLibrary) -> list[dict[str, Any]]:
    """What A1111's `/sdapi/v1/loras` returns, for every LoRA file."""
    return [lora_json(entry) for entry in library.available()]


def lora_card(entry: LoraOnDisk) -> dict[str, Any]:
    """The fields a UI card or `models list --type lora` shows: A1111's item plus preview, version, training summary."""
    meta = entry.metadata
    preview = find_preview(entry.path)
    return {
        **lora_json(entry),
        "preview": str(preview) if preview else None,
        "sd_version": entry.sd_version,
        "network_dim": meta.get("ss_network_dim"),
        "network_alpha": meta.get("ss_network_alpha"),
        "base_model": meta.get("ss_sd_model_name"),
        "steps": meta.get("ss_max_train_steps") or meta.get("ss_steps"),
        "resolution": meta.get("ss_resolution"),
        "training_metadata": {k: v for k, v in meta.items() if k.startswith("ss_")},
    }


class LoraInfotext(dict):
    """Infotext parameters from a batch hook (`{"Lora hashes": ...}`), carrying the job's LoRA warnings."""

    def __init__(self, params: dict[str, str], warnings: list[str], report: LoraReport | None = None):
        super().__init__(params)
        self.warnings = list(warnings)
        self.report = report


class LoraBatchHook:
    """The engine's `BatchHook` for `<lora:...>` tags: applied around each batch, removed after it.

    Like A1111, the batch's LoRAs are those of its first prompt (`extract_extra_networks_batch`).
    Yields a `LoraInfotext`: the `Lora hashes` infotext entry, with `.warnings` for the result.
    """

    def __init__(self, library: LoraLibrary, add_hashes_to_infotext: bool = True):
        self.library = library
        self.add_hashes_to_infotext = add_hashes_to_infotext  # A1111 option lora_add_hashes_to_infotext

    @contextmanager
    def __call__(
        self, model: GenerationModel, prompts: list[str], negative_prompts: list[str]
    ) -> Iterator[LoraInfotext | None]:
        activations = activations_from_prompt(prompts[0]) if prompts else []
        if not activations:
            yield None
            return
        with self.library.apply(
            model.unet, model.encoder.text_encoders, activations, model.encoder.clear_cache
        ) as report:
            params = report.infotext_params() if self.add_hashes_to_infotext else {}
            yield LoraInfotext(params, report.warnings, report)
