"""A1111's checkpoint merger (v1.10 `run_modelmerger`), done tensor by tensor in bounded memory.

What is merged, as A1111: every tensor of the primary model (A) whose name contains "model"
(the UNet, VAE and text encoder; `model_ema.*` too) and which the secondary model (B) also
has is combined by the interpolation method, `(1 - M)·A + M·B` ("Weighted sum") or
`A + M·(B - C)` ("Add difference"; a B tensor that C lacks adds nothing); every other tensor
of A is kept as it is, tensors only B or C have are dropped, and the text encoder's
`position_ids` are never merged. An inpainting (9 input channels) or instruct-pix2pix (8) A
merges with a normal B on its first 4 channels, and the file name says `.inpainting` /
`.instruct-pix2pix`. "Save as float16" halves the float32 tensors that were merged (all of
them with "No interpolation"), a baked-in VAE (from models/VAE, its `loss.*` and
`model_ema.decay/num_updates` entries skipped) replaces A's `first_stage_model.*` weights,
and weights whose name matches the discard regex are left out. Old SD1 text-encoder names
(and SD2-Turbo's `conditioner.embedders.0.`) are renamed as A1111 renames them on load.

Where sdstudio differs, on purpose: an existing file is never overwritten (A1111 overwrites
silently); integer tensors (step counters) are kept from A instead of being turned into
floats by the formula; models whose tensors do not fit each other, or a VAE that fits no
weight of A, are refused with an error naming the field instead of a torch error or a file
without the VAE (a VAE saved under `first_stage_model.` names bakes in too).

Memory: safetensors inputs are read one tensor at a time (pickled .ckpt inputs are loaded
whole by the safe unpickler) and a safetensors output is written tensor by tensor, its header
planned first from the inputs' headers; a .ckpt output holds the merged model once.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, field_validator

from sdstudio.config import atomic_path
from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound, SdStudioError
from sdstudio.models.registry import SD_VAE_NONE, ModelEntry, ModelRegistry
from sdstudio.models.state_dict import SAFETENSORS_SUFFIX, load_state_dict
from sdstudio.models.tensor_stream import SafetensorsReader, TensorSpec, write_safetensors
from sdstudio.validation import CheckedRequest

INTERP_METHODS = ("No interpolation", "Weighted sum", "Add difference")
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")  # A1111's radio; the request carries the index
CHECKPOINT_FORMATS = ("safetensors", "ckpt")
SKIPPED_ON_MERGE = frozenset({"cond_stage_model.transformer.text_model.embeddings.position_ids"})
VAE_IGNORED_KEYS = frozenset({"model_ema.decay", "model_ema.num_updates"})
VAE_PREFIX = "first_stage_model."
UNET_PREFIX = "model.diffusion_model."
TEXT_ENCODER_PREFIXES = ("cond_stage_model.", "conditioner.")
# A1111 renames these key prefixes whenever it reads a checkpoint (sd_models.get_state_dict_from_checkpoint).
SD1_RENAMES = (
    ("cond_stage_model.transformer.embeddings.", "cond_stage_model.transformer.text_model.embeddings."),
    ("cond_stage_model.transformer.encoder.", "cond_stage_model.transformer.text_model.encoder."),
    ("cond_stage_model.transformer.final_layer_norm.", "cond_stage_model.transformer.text_model.final_layer_norm."),
)
SD2_TURBO_RENAMES = (("conditioner.embedders.0.", "cond_stage_model."),)
SD2_TURBO_MARKER = "conditioner.embedders.0.model.ln_final.weight"
MAX_FILE_NAME_BYTES = 255
DISK_MARGIN_BYTES = 64 * 2**20

Progress = Callable[[str, int, int], None]
"""(what is being done, items done, items in all)."""


class MergeInterrupted(SdStudioError):
    """The merge was interrupted; nothing was saved."""


class MergeRequest(CheckedRequest):
    """A merge as A1111's Checkpoint Merger asks for it (its `run_modelmerger` parameter names and UI defaults)."""

    model_config = ConfigDict(extra="forbid")

    primary_model_name: str = ""
    secondary_model_name: str | None = ""
    tertiary_model_name: str | None = ""
    interp_method: Literal["No interpolation", "Weighted sum", "Add difference"] = "Weighted sum"
    multiplier: float = 0.3
    save_as_half: bool = False
    custom_name: str = ""
    checkpoint_format: Literal["safetensors", "ckpt"] = "safetensors"
    config_source: int = 0
    """0 "A, B or C", 1 "B", 2 "C", 3 "Don't" (A1111's radio index); the labels are accepted too."""
    bake_in_vae: str | None = SD_VAE_NONE
    discard_weights: str | None = ""
    save_metadata: bool = True
    add_merge_recipe: bool = True
    copy_metadata_fields: bool = True
    metadata_json: str | dict[str, Any] | None = "{}"

    @field_validator("config_source", mode="before")
    @classmethod
    def _config_source_index(cls, value: Any) -> Any:
        if isinstance(value, str) and value in CONFIG_SOURCES:
            return CONFIG_SOURCES.index(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(CONFIG_SOURCES):
            raise ValueError(f"must be 0-3 or one of {', '.join(CONFIG_SOURCES)}, got {value!r}")
        return value

    @field_validator("custom_name")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        value = value.strip()
        if any(bad in value for bad in ("/", "\\", "\0")) or value.startswith("."):
            raise ValueError("must be a file name without folders (and not start with a dot)")
        if len(value.encode("utf-8")) > MAX_FILE_NAME_BYTES - 40:
            raise ValueError("is too long for a file name")
        return value

    @field_validator("discard_weights")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        try:
            re.compile(value or "")
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    @field_validator("metadata_json")
    @classmethod
    def _json_object(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str) and value.strip():
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object")
        return value

    @property
    def uses_secondary(self) -> bool:
        return self.interp_method != "No interpolation"

    @property
    def uses_tertiary(self) -> bool:
        return self.interp_method == "Add difference"

    def extra_metadata(self) -> dict[str, str]:
        """`metadata_json` as safetensors metadata (text values; others as JSON)."""
        value = self.metadata_json
        parsed: dict[str, Any] = json.loads(value) if isinstance(value, str) and value.strip() else {}
        if isinstance(value, dict):
            parsed = value
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()}


@dataclass(frozen=True)
class MergeModels:
    """The primary (A), secondary (B) and tertiary (C) checkpoints of a merge, as the registry lists them."""

    a: ModelEntry
    b: ModelEntry | None = None
    c: ModelEntry | None = None

    @property
    def entries(self) -> list[ModelEntry]:
        """The models given, in order A, B, C."""
        return [entry for entry in (self.a, self.b, self.c) if entry is not None]


@dataclass(frozen=True)
class MergeResult:
    """The merged checkpoint as listed, and what the merge made of it."""

    path: Path
    entry: ModelEntry
    config: Path | None
    is_inpainting: bool
    is_instruct_pix2pix: bool

    @property
    def message(self) -> str:
        """A1111's result line."""
        return f"Checkpoint saved to {self.path}"


class CheckpointTensors:
    """One checkpoint's tensors under A1111's names: read when asked (safetensors) or loaded whole (pickles)."""

    def __init__(self, path: Path):
        self.path = path
        self._reader: SafetensorsReader | None = None
        if path.suffix.lower() == SAFETENSORS_SUFFIX:
            self._reader = SafetensorsReader(path)
            specs = self._reader.specs
            self._read: Callable[[str], torch.Tensor] = self._reader.read
        else:
            tensors = load_state_dict(path)
            specs = {name: TensorSpec(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()}
            self._read = tensors.__getitem__
        marker = specs.get(SD2_TURBO_MARKER)
        renames = SD2_TURBO_RENAMES if marker is not None and marker.shape[:1] == (1024,) else SD1_RENAMES
        self.names = {_renamed(name, renames): name for name in specs}  # A1111 name -> name in the file
        self._specs = specs

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def keys(self) -> list[str]:
        return list(self.names)

    def spec(self, name: str) -> TensorSpec:
        return self._specs[self.names[name]]

    def get(self, name: str, real: bool) -> torch.Tensor:
        """The tensor (read now), or with `real=False` a data-less one of its dtype and shape."""
        return self._read(self.names[name]) if real else self.spec(name).meta()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def _renamed(name: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if name.startswith(old):
            name = new + name[len(old) :]
    return name


class TensorMerge:
    """The merged value of each of A's tensors, computed alone (for real, or on data-less tensors to plan)."""

    def __init__(
        self,
        request: MergeRequest,
        a: CheckpointTensors,
        b: CheckpointTensors | None,
        c: CheckpointTensors | None,
        vae: CheckpointTensors | None,
    ):
        self.request, self.a, self.b, self.c, self.vae = request, a, b, c, vae
        self.multiplier = request.multiplier
        self.is_inpainting = False
        self.is_instruct_pix2pix = False
        self.vae_names: dict[str, str] = {}
        if vae is not None:
            for name in vae.keys():
                if name.startswith("loss") or name in VAE_IGNORED_KEYS:
                    continue
                # A VAE saved with its checkpoint prefix bakes in too (A1111 would skip it silently).
                self.vae_names[name if name.startswith(VAE_PREFIX) else VAE_PREFIX + name] = name
        discard = request.discard_weights
        self.discard = re.compile(discard) if discard else None

    def output_names(self) -> list[str]:
        """A's tensor names in A's order, those matching the discard regex left out.

        A regex that would leave out weights the checkpoint cannot generate without (the UNet's, the
        text encoder's, the VAE's unless one is baked in) is refused: A1111 writes such a file, which
        then fails to load (and, as the first file in the folder, may become the default checkpoint).
        """
        names = list(self.a.keys())
        if self.discard is None:
            return names
        essential = (UNET_PREFIX, *TEXT_ENCODER_PREFIXES) + (() if self.vae_names else (VAE_PREFIX,))
        needed = [  # CLIP's position_ids are rebuilt at load: a file may lack them
            name
            for name in names
            if name.startswith(essential) and not name.endswith("position_ids") and self.discard.search(name)
        ]
        if needed:
            raise InvalidRequest(
                "discard_weights",
                f"{self.request.discard_weights!r} matches {len(needed)} weights the merged checkpoint needs to "
                f"generate (such as {needed[0]}); discard only extra weights, such as '^model_ema'",
            )
        return [name for name in names if not self.discard.search(name)]

    def plan(self) -> list[TensorSpec]:
        """The output's tensors with their dtypes and shapes, worked out without reading any tensor data."""
        specs = []
        for name in self.output_names():
            value = self.tensor(name, real=False)
            specs.append(TensorSpec(name, value.dtype, tuple(value.shape)))
        if self.vae is not None and not any(name in self.vae_names for name in self.a.keys()):
            raise InvalidRequest(
                "bake_in_vae",
                f"{self.vae.path.name} has no weight that fits the primary model's VAE (first_stage_model)",
            )
        return specs

    def tensor(self, name: str, real: bool = True) -> torch.Tensor:
        """A's tensor `name` merged, baked and halved as A1111 does it."""
        a, b, c = self.a, self.b, self.c
        value = a.get(name, real)
        if b is not None and "model" in name and name in b and name not in SKIPPED_ON_MERGE:
            if a.spec(name).dtype.is_floating_point:
                other = b.get(name, real)
                if c is not None:
                    other = self._difference(name, other, c, real)
                value = self._half(self._combine(name, value, other))
        vae_name = self.vae_names.get(name)
        if vae_name is not None and self.vae is not None:
            baked = self.vae.get(vae_name, real)
            if baked.shape != value.shape:
                raise InvalidRequest(
                    "bake_in_vae",
                    f"{self.vae.path.name}: {vae_name} is {tuple(baked.shape)}, the primary model's is "
                    f"{tuple(value.shape)} (a VAE for another model type?)",
                )
            value = self._half(baked)
        if b is None:
            value = self._half(value)
        return value

    def _difference(self, name: str, b: torch.Tensor, c: CheckpointTensors, real: bool) -> torch.Tensor:
        if name not in c:
            return torch.zeros_like(b)
        subtrahend = c.get(name, real)
        if subtrahend.shape != b.shape:
            raise InvalidRequest(
                "tertiary_model_name",
                f"{name} is {tuple(subtrahend.shape)} in {c.path.name} and {tuple(b.shape)} in the secondary "
                "model: B and C must be the same kind of model",
            )
        return b - subtrahend

    def _interpolate(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        m = self.multiplier
        if self.c is not None:
            return a + (m * b)
        return ((1 - m) * a) + (m * b)

    def _combine(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape == b.shape:
            return self._interpolate(a, b)
        same_but_channels = a.ndim == b.ndim >= 2 and a.shape[:1] + a.shape[2:] == b.shape[:1] + b.shape[2:]
        if not same_but_channels:
            raise InvalidRequest(
                "secondary_model_name",
                f"{name} is {tuple(b.shape)} in the secondary model and {tuple(a.shape)} in the primary: "
                "the models are of different kinds (SD1, SD2, SDXL...) and cannot be merged",
            )
        channels = (a.shape[1], b.shape[1])
        if channels == (4, 9):
            raise InvalidRequest(
                "primary_model_name",
                "when merging an inpainting model with a normal one, A must be the inpainting model",
            )
        if channels == (4, 8):
            raise InvalidRequest(
                "primary_model_name",
                "when merging an instruct-pix2pix model with a normal one, A must be the instruct-pix2pix model",
            )
        if channels not in ((9, 4), (8, 4)):
            raise InvalidRequest(
                "secondary_model_name",
                f"bad dimensions for merged layer {name}: A={tuple(a.shape)}, B={tuple(b.shape)}",
            )
        # The extra input channels (masked image and mask, or the instruction image) stay A's.
        merged = a.clone()
        merged[:, 0:4] = self._interpolate(a[:, 0:4], b)
        if channels[0] == 9:
            self.is_inpainting = True
        else:
            self.is_instruct_pix2pix = True
        return merged

    def _half(self, value: torch.Tensor) -> torch.Tensor:
        return value.half() if self.request.save_as_half and value.dtype == torch.float32 else value


def output_file_name(
    request: MergeRequest, models: MergeModels, inpainting: bool = False, instruct_pix2pix: bool = False
) -> str:
    """A1111's name: custom_name, else `0.7(A) + 0.3(B)`, `A + 0.3(B - C)` or A's name; then suffixes."""
    a, b, c = models.a, models.b, models.c
    m = request.multiplier
    if request.custom_name:
        name = request.custom_name
    elif request.interp_method == "Weighted sum" and b is not None:
        name = f"{round(1 - m, 2)}({a.model_name}) + {round(m, 2)}({b.model_name})"
    elif request.interp_method == "Add difference" and b is not None and c is not None:
        name = f"{a.model_name} + {round(m, 2)}({b.model_name} - {c.model_name})"
    else:
        name = a.model_name
    name += ".inpainting" if inpainting else ""
    name += ".instruct-pix2pix" if instruct_pix2pix else ""
    return f"{name}.{request.checkpoint_format}"


def merge_metadata(
    request: MergeRequest, models: MergeModels, inpainting: bool = False, instruct_pix2pix: bool = False
) -> dict[str, str] | None:
    """The safetensors metadata A1111 writes: copied fields, `metadata_json`, `sd_merge_recipe`, `sd_merge_models`."""
    if not request.save_metadata:
        return None
    a, b, c = models.a, models.b, models.c
    inputs = models.entries
    metadata: dict[str, str] = {}
    if request.copy_metadata_fields:
        for entry in inputs:
            metadata.update({str(k): str(v) for k, v in entry.metadata.items()})
    metadata.update(request.extra_metadata())
    metadata["format"] = "pt"
    if request.add_merge_recipe:
        recipe = {
            "type": "webui",
            "primary_model_hash": a.sha256,
            "secondary_model_hash": b.sha256 if b else None,
            "tertiary_model_hash": c.sha256 if c else None,
            "interp_method": request.interp_method,
            "multiplier": request.multiplier,
            "save_as_half": request.save_as_half,
            "custom_name": request.custom_name,
            "config_source": request.config_source,
            "bake_in_vae": request.bake_in_vae,
            "discard_weights": request.discard_weights,
            "is_inpainting": inpainting,
            "is_instruct_pix2pix": instruct_pix2pix,
        }
        merged_models: dict[str, Any] = {}
        for entry in inputs:
            merged_models[str(entry.sha256)] = {
                "name": entry.name,
                "legacy_hash": entry.hashes.legacy if entry.hashes else None,
                "sd_merge_recipe": _json_text(entry.metadata.get("sd_merge_recipe")),
            }
            ancestors = _json_text(entry.metadata.get("sd_merge_models"))
            if isinstance(ancestors, dict):
                merged_models.update(ancestors)
        metadata["sd_merge_recipe"] = json.dumps(recipe)
        metadata["sd_merge_models"] = json.dumps(merged_models)
    return metadata


def _json_text(value: Any) -> Any:
    """A metadata value as A1111 reads it: text that starts with "{" and parses is the object, else as it is."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def config_to_copy(request: MergeRequest, models: MergeModels) -> Path | None:
    """The yaml beside A, B or C that `config_source` picks (A1111's create_config), if there is one."""
    configs = [entry.config if entry is not None else None for entry in (models.a, models.b, models.c)]
    choice = request.config_source
    if choice == 0:
        return next((config for config in configs if config is not None), None)
    if choice in (1, 2):
        return configs[choice]
    return None


def merge_checkpoint_files(
    request: MergeRequest,
    models: MergeModels,
    *,
    output_dir: Path,
    vae: Path | None = None,
    progress: Progress | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> tuple[Path, Path | None, TensorMerge]:
    """Merge the checkpoint files of `models` into `output_dir`; returns the file, its yaml and the merge.

    Nothing is written when the output (or its yaml) exists, a field is wrong, the disk is too
    full or the merge is interrupted; a write cut short leaves no partial file.
    """
    report = progress or (lambda text, done, total: None)
    with ExitStack() as stack:
        report("Loading", 0, 1)

        def opened(path: Path | None) -> CheckpointTensors | None:
            if path is None:
                return None
            source = CheckpointTensors(path)
            stack.callback(source.close)
            return source

        primary = CheckpointTensors(models.a.path)
        stack.callback(primary.close)
        b, c = (opened(entry.path if entry else None) for entry in (models.b, models.c))
        merge = TensorMerge(request, primary, b, c, opened(vae))
        specs = merge.plan()
        file_name = output_file_name(request, models, merge.is_inpainting, merge.is_instruct_pix2pix)
        if len(file_name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
            raise InvalidRequest("custom_name", f"the name {file_name!r} is too long for a file: give a shorter one")
        target = output_dir / file_name
        config = config_to_copy(request, models)
        for path in (target, target.with_suffix(".yaml") if config is not None else None):
            if path is not None and (path.exists() or path.is_symlink()):
                raise _exists(path)
        output_dir.mkdir(parents=True, exist_ok=True)
        needed = sum(spec.nbytes for spec in specs) + DISK_MARGIN_BYTES
        free = shutil.disk_usage(output_dir).free
        if free < needed:
            raise SdStudioError(
                f"not enough disk space in {output_dir}: the merged checkpoint needs about "
                f"{math.ceil(needed / 2**20)} MiB, {free // 2**20} MiB are free"
            )
        done = 0

        def merged(spec: TensorSpec) -> torch.Tensor:
            nonlocal done
            if interrupted is not None and interrupted():
                raise MergeInterrupted("the merge was interrupted; nothing was saved")
            done += 1
            report("Merging", done, len(specs))
            return merge.tensor(spec.name)

        try:
            with atomic_path(target, replace=False) as tmp:
                if request.checkpoint_format == "safetensors":
                    metadata = merge_metadata(request, models, merge.is_inpainting, merge.is_instruct_pix2pix)
                    write_safetensors(tmp, specs, merged, metadata)
                else:
                    torch.save({spec.name: merged(spec) for spec in specs}, tmp)
                report("Saving", len(specs), len(specs))
        except FileExistsError:  # made by someone else while this merge ran
            raise _exists(target) from None
    copied = None
    if config is not None:
        copied = target.with_suffix(".yaml")
        try:
            with atomic_path(copied, replace=False) as tmp:
                shutil.copyfile(config, tmp)
        except FileExistsError:
            raise _exists(copied) from None
    return target, copied, merge


def _exists(path: Path) -> InvalidRequest:
    return InvalidRequest("custom_name", f"{path} already exists; choose another custom_name (nothing is overwritten)")


class CheckpointMerger:
    """Merges checkpoints named as the registry names them into models/Stable-diffusion."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def merge(
        self, request: MergeRequest, progress: Progress | None = None, interrupted: Callable[[], bool] | None = None
    ) -> MergeResult:
        """Check the request, find its models and VAE, merge, and return the new checkpoint as listed."""
        if not request.primary_model_name:
            raise InvalidRequest("primary_model_name", "merging requires a primary model (A)")
        if request.uses_secondary and not request.secondary_model_name:
            raise InvalidRequest("secondary_model_name", f"{request.interp_method} requires a secondary model (B)")
        if request.uses_tertiary and not request.tertiary_model_name:
            raise InvalidRequest("tertiary_model_name", f"{request.interp_method} requires a tertiary model (C)")
        recipe = request.save_metadata and request.add_merge_recipe and request.checkpoint_format == "safetensors"
        a = self._checkpoint("primary_model_name", request.primary_model_name, recipe)
        b = c = None
        if request.uses_secondary:
            b = self._checkpoint("secondary_model_name", request.secondary_model_name or "", recipe)
        if request.uses_tertiary:
            c = self._checkpoint("tertiary_model_name", request.tertiary_model_name or "", recipe)
        vae = self._vae(request.bake_in_vae)
        path, config, merge = merge_checkpoint_files(
            request,
            MergeModels(a, b, c),
            output_dir=self.registry.paths.folder("checkpoint"),
            vae=vae,
            progress=progress,
            interrupted=interrupted,
        )
        if progress is not None:
            progress("Hashing", 0, 1)
        entry = self.registry.find_checkpoint(str(path))  # listed and hashed, as A1111 does after a merge
        return MergeResult(path, entry, config, merge.is_inpainting, merge.is_instruct_pix2pix)

    def _checkpoint(self, field: str, name: str, hashes: bool) -> ModelEntry:
        try:
            return self.registry.find_usable("checkpoint", name, with_hashes=hashes)
        except NotFound as exc:
            raise NotFound(f"{field}: {exc}") from None
        except ModelLoadError as exc:
            raise InvalidRequest(field, str(exc)) from None

    def _vae(self, name: str | None) -> Path | None:
        if not name or name == SD_VAE_NONE:
            return None
        try:
            return self.registry.find_usable("vae", name, with_hashes=False).path
        except NotFound as exc:
            raise NotFound(f"bake_in_vae: {exc}") from None
        except ModelLoadError as exc:
            raise InvalidRequest("bake_in_vae", str(exc)) from None

    def read_metadata(self, names: Iterable[str | None]) -> str:
        """A1111's "Read metadata from selected checkpoints": their metadata, later ones winning, as JSON text."""
        metadata: dict[str, Any] = {}
        for name in names:
            if not name:
                continue
            try:
                entry = self.registry.find_checkpoint(name, with_hashes=False)
            except NotFound:
                continue  # as A1111: a name that is not listed adds nothing
            metadata.update({key: _json_text(value) for key, value in entry.metadata.items()})
        return json.dumps(metadata, indent=4, ensure_ascii=False)
