"""Settings and the data directory.

One typed `Settings` object holds the user's options under A1111's option names where
A1111 has one, loaded from and saved to `config.json` in the data dir. Unknown keys are
kept (extensions and A1111 copy-overs put their own options there), writes are atomic,
and a corrupt file is moved aside with a clear message instead of crashing every start.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, JsonValue, ValidationError, field_validator

from sdstudio.errors import InvalidRequest
from sdstudio.validation import CheckedModel

DATA_DIR_ENV = "SDSTUDIO_DATA_DIR"

# -- Model files: the A1111 folder layout (SPEC.md §1), relative to the data dir ----------


@dataclass(frozen=True)
class ModelKind:
    """A kind of model file: the data-dir folders it is found in (new files go to the first) and its suffixes."""

    name: str
    folders: tuple[str, ...]
    suffixes: tuple[str, ...]
    # Searched when present, never created: another program's folder (an empty one would look like its install).
    found_only: tuple[str, ...] = ()

    def files_in(self, folder: Path) -> list[Path]:
        """Files of this kind under `folder` (symlinks followed, hidden names skipped), sorted case-insensitively."""
        found: list[Path] = []
        visited: set[str] = set()
        for root, dirs, files in os.walk(folder, followlinks=True):
            real = os.path.realpath(root)
            if real in visited:  # a link back up the tree: walk each directory once
                dirs[:] = []
                continue
            visited.add(real)
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [
                Path(root) / name for name in files if not name.startswith(".") and name.lower().endswith(self.suffixes)
            ]
        return sorted(found, key=lambda path: path.relative_to(folder).as_posix().lower())


# Upscaler and face-restoration weights (read through spandrel) share their suffixes.
IMAGE_MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

MODEL_KINDS = {
    kind.name: kind
    for kind in (
        ModelKind("checkpoint", ("models/Stable-diffusion",), (".safetensors", ".ckpt")),
        ModelKind("vae", ("models/VAE",), (".safetensors", ".pt", ".ckpt", ".bin")),
        ModelKind("lora", ("models/Lora", "models/LyCORIS"), (".safetensors", ".pt", ".ckpt")),
        ModelKind("embedding", ("embeddings",), (".pt", ".bin", ".safetensors")),
        ModelKind("hypernetwork", ("models/hypernetworks",), (".pt",)),
        ModelKind(
            "upscaler",
            ("models/ESRGAN", "models/RealESRGAN", "models/SwinIR", "models/DAT", "models/HAT"),
            IMAGE_MODEL_SUFFIXES,
        ),
        ModelKind("face_restorer", ("models/GFPGAN", "models/Codeformer"), IMAGE_MODEL_SUFFIXES),
        ModelKind(
            "controlnet",
            ("models/ControlNet",),
            (".safetensors", ".pth", ".pt", ".ckpt", ".bin"),
            found_only=("extensions/sd-webui-controlnet/models",),
        ),
    )
}
"""Every kind of model file, by name (the `--type` of `sdstudio models`)."""

PREVIEW_SUFFIXES = (
    ".png",
    ".preview.png",
    ".jpg",
    ".preview.jpg",
    ".jpeg",
    ".preview.jpeg",
    ".webp",
    ".preview.webp",
    ".gif",
    ".preview.gif",
)
"""Card images beside a model file (NAME.png...), in A1111's order (ui_extra_networks.find_preview)."""


def find_preview(model_file: Path) -> Path | None:
    """The preview image beside a model file, if there is one."""
    base = Path(model_file).with_suffix("")
    for suffix in PREVIEW_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def default_data_dir() -> Path:
    """Where user files live when neither --data-dir nor SDSTUDIO_DATA_DIR is given."""
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "sdstudio"


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data dir: the explicit argument, else $SDSTUDIO_DATA_DIR, else the default."""
    chosen = explicit or os.environ.get(DATA_DIR_ENV) or default_data_dir()
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class DataPaths:
    """Absolute paths of everything user-owned, all under one root."""

    root: Path

    def folder(self, kind: str, name: str | None = None) -> Path:
        """A model kind's first folder (where new files go), or its folder called `name` ("RealESRGAN")."""
        if name is None:
            return self.root / MODEL_KINDS[kind].folders[0]
        for folder in self.folders(kind):
            if folder.name == name:
                return folder
        raise KeyError(f"no {kind} folder named {name!r}")

    def folders(self, kind: str) -> list[Path]:
        """Every folder a model kind is found in."""
        return [self.root / folder for folder in (*MODEL_KINDS[kind].folders, *MODEL_KINDS[kind].found_only)]

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def styles_file(self) -> Path:
        return self.root / "styles.csv"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def resolve_inside(self, relative: str | os.PathLike[str]) -> Path:
        """Resolve a user/request-supplied path, refusing anything outside the data dir.

        `~` is not expanded and `..` or symlinks that lead out are refused: the path is
        resolved first and then checked, so every spelling of an outside path is caught.
        """
        candidate = (self.root / relative).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise ValueError(f"path {str(relative)!r} is outside the data dir {self.root}")
        return candidate

    def ensure(self) -> DataPaths:
        """Create the data dir with the A1111 layout (idempotent)."""
        for kind in MODEL_KINDS.values():
            for folder in kind.folders:
                (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return self


ImageFormat = Literal["png", "jpg", "jpeg", "webp"]
"""The file formats images and grids are saved in (engine.saving.encode_image writes these)."""
RefinerPass = Literal["first pass", "second pass", "both passes"]

IMAGE_DECODE_LIMIT_MP = 80.0
"""Default of `img_max_decode_mp`: 8192×8192 (67 Mpx, the largest generation size) fits, a 100 Mpx bomb does not."""

PILLOW_DECODE_LIMIT_MP = 178.0
"""Pillow refuses images over 2 × Image.MAX_IMAGE_PIXELS (178.9 Mpx) whatever the setting; the option stops below."""

# Each limit setting owns its limit; these ceilings are the most it may be set to, and what "0 = no
# limit" means. Requests (engine.request) refuse past the same numbers, for every front end (the
# CLI too), so a request's own bounds never refuse what a setting allows and the errors name the
# setting. Far above anything sane on one machine; they only keep a request's numbers from
# overflowing into allocations (a schedule of 10**9 steps, 10**9 latents).
STEPS_CEILING = 1000
"""Most sampling steps (each pass) any request may ask for: the ceiling of limit_steps."""
IMAGES_PER_JOB_CEILING = 10_000
"""Most images (batch_size × n_iter) any request may ask for: the ceiling of limit_images_per_job."""


ExtensionsOff = Literal["none", "extra", "all"]
"""A1111's disable_all_extensions: "extra" keeps the built-in scripts."""

MOST_MEGABYTES = float(2**43)
"""The largest size option in MB: its bytes (x 2**20) still fit a 64-bit integer (8 EiB). A larger finite
value (1e308) would become an infinite byte count, which no integer holds: every request would fail."""


class Settings(CheckedModel):
    """User options, under A1111's option names (shared.opts) where A1111 has one.

    Frozen: a Settings object is a value. Changes go through `SettingsStore`, which builds
    a new object, so a job holding a snapshot never sees an option change under it.
    Every value is checked here (types, ranges, choices, the device on this machine), so a
    value that would fail every later job or every GET /options is refused before it is saved.
    Strings, unknown options' names and values included, are made writable (CheckedModel):
    a lone surrogate cannot reach config.json, whose UTF-8 encoding would refuse it.
    """

    # No NaN/Infinity anywhere: JSON cannot carry them, and a saved NaN made GET /options fail for good.
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)  # unknown keys (extensions'): any JSON value

    # Model selection and memory
    sd_model_checkpoint: str = ""
    sd_checkpoints_limit: int = Field(default=1, ge=1)  # checkpoints kept loaded at once (A1111's option)
    model_memory_budget_mb: float = Field(default=0, ge=0, le=MOST_MEGABYTES)  # all loaded models; 0 = no budget
    sd_vae: str = "Automatic"
    CLIP_stop_at_last_layers: int = Field(default=1, ge=1, le=12)  # A1111's slider range
    # Saving
    samples_save: bool = True
    samples_format: ImageFormat = "png"
    grid_save: bool = True
    grid_format: ImageFormat = "png"
    return_grid: bool = True
    save_images_add_number: bool = True
    save_to_dirs: bool = True
    directories_filename_pattern: str = "[date]"
    samples_filename_pattern: str = ""
    enable_pnginfo: bool = True
    jpeg_quality: int = Field(default=80, ge=1, le=100)  # WebP refuses anything outside 0..100
    webp_lossless: bool = False
    outdir_samples: str = ""
    outdir_txt2img_samples: str = "outputs/txt2img-images"
    outdir_img2img_samples: str = "outputs/img2img-images"
    outdir_extras_samples: str = "outputs/extras-images"
    outdir_grids: str = ""
    outdir_txt2img_grids: str = "outputs/txt2img-grids"
    outdir_img2img_grids: str = "outputs/img2img-grids"
    # Sampling
    eta_noise_seed_delta: int = Field(default=0, ge=-(2**32), le=2**32)  # seed + delta must fit torch's int64
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0
    s_noise: float = 1.0
    initial_noise_multiplier: float = 1.0  # img2img: scales the noise added to the init latent
    randn_source: str = "CPU"
    # Refiner (A1111): in a hires job, which pass may switch to the refiner; switch by step count, not noise level
    hires_fix_refiner_pass: RefinerPass = "second pass"
    refiner_switch_by_sample_steps: bool = False
    # Progress / previews
    show_progress_every_n_steps: int = 10
    live_previews_enable: bool = True
    # Postprocessing
    face_restoration_model: str = "CodeFormer"
    code_former_weight: float = Field(default=0.5, ge=0, le=1)
    ESRGAN_tile: int = 192
    ESRGAN_tile_overlap: int = 8
    enable_invisible_watermark: bool = False
    # Device and precision (A1111 has these as command-line flags; here they persist)
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps: a device this machine has
    precision: str = "auto"
    no_half_vae: bool = False
    vae_tiling: bool = False
    attention_slicing: bool = False
    # A1111's token merging (ToMe, tomesd): share of attention tokens merged in the UNet's largest
    # attention layers; 0 = off. img2img and the hires pass have their own (0 = use token_merging_ratio).
    token_merging_ratio: float = Field(default=0.0, ge=0.0, le=0.9, allow_inf_nan=False)
    token_merging_ratio_img2img: float = Field(default=0.0, ge=0.0, le=0.9, allow_inf_nan=False)
    token_merging_ratio_hr: float = Field(default=0.0, ge=0.0, le=0.9, allow_inf_nan=False)
    # The step cache (engine.step_cache, DeepCache's idea): the whole UNet every N calls, its shallowest
    # branch in between; 0 or 1 = off.
    step_cache_interval: int = Field(default=0, ge=0, le=20)
    cpu_offload: bool = False
    # Limits on what one request may ask for (checked before the work is queued; 0 = no limit)
    limit_batch_megapixels: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    limit_images_per_job: int = Field(default=1000, ge=0, le=IMAGES_PER_JOB_CEILING)
    limit_steps: int = Field(default=500, ge=0, le=STEPS_CEILING)
    limit_queued_jobs: int = Field(default=100, ge=0)
    limit_queued_jobs_per_client: int = Field(default=50, ge=0)
    limit_request_body_mb: float = Field(default=50.0, ge=0, le=MOST_MEGABYTES, allow_inf_nan=False)
    # The API's task queue (server.tasks): a task running when the process died is run again once
    tasks_requeue_interrupted: bool = True
    # `sdstudio serve --cluster` without --replicas: Ray Serve scales the generation workers between these
    cluster_min_replicas: int = Field(default=1, ge=1, le=1000)
    cluster_max_replicas: int = Field(default=2, ge=1, le=1000)

    # Images from clients (API base64, uploads, files named on the command line): larger ones are refused
    # before their pixels are decoded, so a small file declaring a huge size cannot exhaust memory.
    img_max_decode_mp: float = Field(default=IMAGE_DECODE_LIMIT_MP, gt=0, le=PILLOW_DECODE_LIMIT_MP)

    prompt_max_length: int = Field(default=10_000, ge=1)  # characters in each prompt field; longer ones are refused

    # Extensions (A1111's options) and the web UI's language
    disabled_extensions: list[str] = []  # extension folder names that are not loaded
    disable_all_extensions: ExtensionsOff = "none"  # "extra": only the built-in scripts; "all": none at all
    localization: str = "None"  # a localizations/NAME.json for the web UI ("None": English)

    @field_validator("samples_format", "grid_format", mode="before")
    @classmethod
    def _format_name(cls, value: Any) -> Any:
        """Read "PNG" and ".png" as png, as the saver always did."""
        return value.strip().lower().lstrip(".") if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _device_on_this_machine(cls, value: str) -> str:
        problem = device_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """All options, the unknown keys from config.json included."""
        return self.model_dump(mode="json")

    def merged(self, changes: dict[str, Any], field: str | None = None) -> Settings:
        """A new Settings with `changes` applied and validated; InvalidRequest names the bad option.

        `field` prefixes the option name in the error (e.g. "override_settings") when the
        changes came inside a request field.
        """
        if not changes:
            return self
        for name in changes:
            if name in NOT_OPTIONS:
                raise option_error(name, NOT_OPTIONS[name], field)
        try:
            return Settings.model_validate({**self.to_json_dict(), **changes})
        except ValidationError as exc:
            option, message = next(iter(refused_options(exc).items()))
            raise option_error(option, message, field) from None


# A1111 command-line flags that are not options here: saved, they would do nothing, so they are refused.
NOT_OPTIONS = {"device_id": "is A1111's --device-id flag, not an option; set device to 'cuda:N' instead"}


def refused_options(exc: ValidationError) -> dict[str, str]:
    """The options a validation refused, each with its first message (an option, not a path inside one)."""
    refused: dict[str, str] = {}
    for error in exc.errors():
        refused.setdefault(".".join(str(p) for p in error["loc"][:1]), error["msg"])
    return refused


def device_problem(device: str) -> str | None:
    """Why `device` is not a torch device this machine has, or None ("auto" and "" always are)."""
    if device in ("auto", "", "cpu"):
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"{device!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)"
    backend = getattr(torch, parsed.type, None)  # torch.cuda, torch.mps, torch.xpu, torch.cpu
    if backend is None or not getattr(backend, "is_available", lambda: False)():
        return f"this machine has no {parsed.type} device (use auto or cpu)"
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if (parsed.index or 0) >= count:
        return f"this machine has {count} {parsed.type} device(s): {parsed.type}:0 to {parsed.type}:{count - 1}"
    return None


@dataclass(frozen=True)
class OptionInfo:
    """How the Settings page shows an option: its section, A1111's label, and the values it offers."""

    section: str
    label: str
    choices: tuple[str, ...] = ()  # a dropdown's values (custom ones still allowed); () = by the value's type


_IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)

# Every option's section and label, A1111's where it has the option; sections come in the
# order of A1111's settings page, options in the order of their section.
OPTION_INFO: dict[str, OptionInfo] = {
    "samples_save": OptionInfo("Saving images/grids", "Always save all generated images"),
    "samples_format": OptionInfo("Saving images/grids", "File format for images", _IMAGE_FORMATS),
    "samples_filename_pattern": OptionInfo("Saving images/grids", "Images filename pattern"),
    "save_images_add_number": OptionInfo("Saving images/grids", "Add number to filename when saving"),
    "grid_save": OptionInfo("Saving images/grids", "Always save all generated image grids"),
    "grid_format": OptionInfo("Saving images/grids", "File format for grids", _IMAGE_FORMATS),
    "enable_pnginfo": OptionInfo(
        "Saving images/grids", "Save text information about generation parameters as chunks to png files"
    ),
    "jpeg_quality": OptionInfo("Saving images/grids", "Quality for saved jpeg images"),
    "webp_lossless": OptionInfo("Saving images/grids", "Use lossless compression for webp images"),
    "enable_invisible_watermark": OptionInfo("Saving images/grids", "Add an invisible watermark to saved images"),
    "outdir_samples": OptionInfo(
        "Paths for saving", "Output directory for images; if empty, defaults to three directories below"
    ),
    "outdir_txt2img_samples": OptionInfo("Paths for saving", "Output directory for txt2img images"),
    "outdir_img2img_samples": OptionInfo("Paths for saving", "Output directory for img2img images"),
    "outdir_extras_samples": OptionInfo("Paths for saving", "Output directory for images from extras tab"),
    "outdir_grids": OptionInfo(
        "Paths for saving", "Output directory for grids; if empty, defaults to two directories below"
    ),
    "outdir_txt2img_grids": OptionInfo("Paths for saving", "Output directory for txt2img grids"),
    "outdir_img2img_grids": OptionInfo("Paths for saving", "Output directory for img2img grids"),
    "save_to_dirs": OptionInfo("Saving to a directory", "Save images to a subdirectory"),
    "directories_filename_pattern": OptionInfo("Saving to a directory", "Directory name pattern"),
    "ESRGAN_tile": OptionInfo("Upscaling", "Tile size for ESRGAN upscalers (0 = no tiling)"),
    "ESRGAN_tile_overlap": OptionInfo("Upscaling", "Tile overlap for ESRGAN upscalers, pixels"),
    "face_restoration_model": OptionInfo("Face restoration", "Face restoration model", ("CodeFormer", "GFPGAN")),
    "code_former_weight": OptionInfo("Face restoration", "CodeFormer weight (0 = maximum effect, 1 = minimum effect)"),
    "device": OptionInfo("System", "Device to run on", ("auto", "cpu", "cuda", "mps")),
    "precision": OptionInfo("System", "Precision of the weights", ("auto", "fp32", "fp16", "bf16")),
    "no_half_vae": OptionInfo("System", "Keep the VAE in full precision (fp32)"),
    "sd_model_checkpoint": OptionInfo("Stable Diffusion", "Stable Diffusion checkpoint"),
    "sd_checkpoints_limit": OptionInfo("Stable Diffusion", "Maximum number of checkpoints loaded at the same time"),
    "model_memory_budget_mb": OptionInfo("Stable Diffusion", "Memory for all loaded models, MB (0 = no limit)"),
    "CLIP_stop_at_last_layers": OptionInfo("Stable Diffusion", "Clip skip"),
    "hires_fix_refiner_pass": OptionInfo(
        "Stable Diffusion", "Hires fix: which pass to enable refiner for", get_args(RefinerPass)
    ),
    "refiner_switch_by_sample_steps": OptionInfo(
        "Stable Diffusion", "Switch to refiner by sampling steps instead of by model timesteps"
    ),
    "sd_vae": OptionInfo("VAE", "SD VAE"),
    "initial_noise_multiplier": OptionInfo("img2img", "Noise multiplier for img2img"),
    "vae_tiling": OptionInfo("Optimizations", "Encode and decode large images in tiles (less memory)"),
    "attention_slicing": OptionInfo("Optimizations", "Compute attention in slices (less memory, slower)"),
    "cpu_offload": OptionInfo("Optimizations", "Move one part of the model at a time to the GPU (small GPUs)"),
    "token_merging_ratio": OptionInfo("Optimizations", "Token merging ratio (0 = off; faster, less exact as it grows)"),
    "token_merging_ratio_img2img": OptionInfo(
        "Optimizations", "Token merging ratio for img2img (0 = the token merging ratio)"
    ),
    "token_merging_ratio_hr": OptionInfo(
        "Optimizations", "Token merging ratio for the hires pass (0 = the token merging ratio)"
    ),
    "step_cache_interval": OptionInfo(
        "Optimizations", "Step cache: the whole UNet every N calls, only its shallowest branch between (0 = off)"
    ),
    "limit_batch_megapixels": OptionInfo(
        "Limits",
        "Largest batch one request may ask for: width × height × batch size, in megapixels, the hires pass "
        "included (20 = one 4096×4096 image or 16 of 1024×1024; 0 = no limit)",
    ),
    "limit_images_per_job": OptionInfo(
        "Limits",
        "Most images one request may ask for: batch size × batch count (at most 10000; 0 = no limit below that)",
    ),
    "limit_steps": OptionInfo(
        "Limits",
        "Most sampling steps one request may ask for, hires pass included "
        "(A1111's UI: 150; at most 1000; 0 = no limit below that)",
    ),
    "limit_queued_jobs": OptionInfo(
        "Limits",
        "Most jobs (API and web UI) waiting in the queue; more are answered 503 with Retry-After (0 = no limit)",
    ),
    "limit_queued_jobs_per_client": OptionInfo(
        "Limits",
        "Most jobs one client (user, else address; API and web UI alike) may have waiting; more are answered 429 "
        "(0 = no limit)",
    ),
    "limit_request_body_mb": OptionInfo(
        "Limits", "Largest request body, MB; larger ones are answered 413 (0 = no limit)"
    ),
    "img_max_decode_mp": OptionInfo(
        "System",
        "Largest image accepted as input (API images, uploads, files), in megapixels; at most 178, Pillow's own limit",
    ),
    "prompt_max_length": OptionInfo("Limits", "Longest prompt accepted, in characters (each prompt field)"),
    "tasks_requeue_interrupted": OptionInfo(
        "System",
        "Run an API task again, once, when the server stopped while it ran (kill, crash, power cut); "
        "off: it is left marked interrupted",
    ),
    "cluster_min_replicas": OptionInfo(
        "System", "Cluster (serve --cluster): fewest generation workers kept running; read when the server starts"
    ),
    "cluster_max_replicas": OptionInfo(
        "System",
        "Cluster (serve --cluster): most generation workers started when jobs wait; read when the server starts",
    ),
    "return_grid": OptionInfo("User interface", "Show grid in gallery"),
    "live_previews_enable": OptionInfo("Live previews", "Show live previews of the created image"),
    "show_progress_every_n_steps": OptionInfo("Live previews", "Live preview display period, in sampling steps"),
    "eta_ancestral": OptionInfo("Sampler parameters", "Eta for k-diffusion samplers"),
    "eta_ddim": OptionInfo("Sampler parameters", "Eta for DDIM"),
    "eta_noise_seed_delta": OptionInfo("Sampler parameters", "Eta noise seed delta"),
    "s_churn": OptionInfo("Sampler parameters", "sigma churn"),
    "s_tmin": OptionInfo("Sampler parameters", "sigma tmin"),
    "s_tmax": OptionInfo("Sampler parameters", "sigma tmax"),
    "s_noise": OptionInfo("Sampler parameters", "sigma noise"),
    "randn_source": OptionInfo("Sampler parameters", "Random number generator source", ("CPU", "GPU", "NV")),
    "disabled_extensions": OptionInfo("Extensions", "Disabled extensions"),
    "disable_all_extensions": OptionInfo(
        "Extensions", "Disable all extensions (preserves the list of disabled extensions)", get_args(ExtensionsOff)
    ),
    "localization": OptionInfo("User interface", "Localization"),
}
"""Settings page metadata for every `Settings` field (a test keeps the two in step)."""


def option_info(name: str) -> OptionInfo:
    """An option's section and label; options from elsewhere (extensions' keys in config.json) go under "Other"."""
    return OPTION_INFO.get(name) or OptionInfo("Other", name)


def option_error(option: str, message: str, field: str | None = None) -> InvalidRequest:
    """The error for a bad option; inside a request field (override_settings) the field is named first."""
    return InvalidRequest(field, f"option {option}: {message}") if field else InvalidRequest(option, message)


# Options that name a folder to write into; relative to the data dir and confined to it.
PATH_OPTIONS = (
    "outdir_samples",
    "outdir_txt2img_samples",
    "outdir_img2img_samples",
    "outdir_extras_samples",
    "outdir_grids",
    "outdir_txt2img_grids",
    "outdir_img2img_grids",
)


def check_path_option(paths: DataPaths, name: str, value: Any, field: str | None = None) -> None:
    """Refuse a path option that leads outside the data dir (InvalidRequest naming the option)."""
    if not isinstance(value, str):
        raise option_error(name, "must be a folder name", field)
    if not value:
        return
    shown = repr(value if len(value) <= 100 else value[:100] + "...")  # a 100 KB value is not echoed whole
    try:
        folder = paths.resolve_inside(value)
    except ValueError:
        raise option_error(
            name,
            f"{shown} is outside the data dir {paths.root}; use a folder inside it "
            "(a relative path such as outputs/my-images)",
            field,
        ) from None
    problem = folder_problem(folder, paths.root)
    if problem:
        raise option_error(name, f"images cannot be saved in {shown}: {problem}", field)


NAME_MAX_BYTES = 255
"""The longest file or folder name most file systems take (ext4, NTFS, APFS...), in bytes."""

SAVED_UNDER_FOLDER_BYTES = 2 * (NAME_MAX_BYTES + 1)
"""Room a saved image needs below an output folder: a dated subfolder and the file's name."""


def path_limits(root: Path) -> tuple[int, int]:
    """(longest name, longest path) in bytes that the file system holding `root` takes."""
    try:
        return min(NAME_MAX_BYTES, os.pathconf(root, "PC_NAME_MAX")), os.pathconf(root, "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or it cannot say: the common limits
        return NAME_MAX_BYTES, 260 if os.name == "nt" else 1024


def encoded_length(text: str) -> int:
    """Bytes of `text` in a file name (UTF-8; a lone surrogate counted, not refused)."""
    return len(text.encode("utf-8", "surrogatepass"))


def folder_problem(folder: Path, root: Path) -> str | None:
    """Why files cannot be written into `folder` (made when missing), or None; paths shown relative to `root`."""
    longest_name, longest_path = path_limits(root)
    longest = max((encoded_length(part) for part in folder.parts), default=0)
    if longest > longest_name:
        return f"a folder name in it is too long ({longest} bytes; the file system takes at most {longest_name})"
    length = encoded_length(str(folder))
    if length + SAVED_UNDER_FOLDER_BYTES > longest_path:
        most = longest_path - SAVED_UNDER_FOLDER_BYTES - encoded_length(str(root))
        return f"its path is too long ({length} bytes); use a folder of at most {most} bytes inside the data dir"
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent  # a missing folder is made by its nearest existing parent
        shown = existing.relative_to(root).as_posix() if existing.is_relative_to(root) else str(existing)
        if not existing.is_dir():
            return f"{shown} is a file, not a folder"
    except (OSError, ValueError) as error:  # a name the file system refuses, a symlink loop, an unreadable folder
        return f"the file system refuses it ({getattr(error, 'strerror', None) or error})"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{shown} is not writable"
    return None


# Options that name a model file: a name, title or hash from the data dir's model folders,
# never a path to a file elsewhere on the machine (the CLI's --ckpt is not a setting).
MODEL_NAME_OPTIONS = ("sd_model_checkpoint", "sd_vae")


def check_model_name_option(paths: DataPaths, name: str, value: Any, field: str | None = None) -> None:
    """Refuse a model option that names a file outside the data dir (absolute, `~` or `..` paths)."""
    if not isinstance(value, str):
        raise option_error(name, "must be a model name", field)
    text = value.split(" [", 1)[0].strip()  # A1111 titles: "name.safetensors [abcdef1234]"
    candidate = Path(text)
    escapes = text.startswith("~") or ".." in candidate.parts
    if candidate.is_absolute():
        try:
            paths.resolve_inside(candidate)
        except ValueError:
            escapes = True
    if escapes:
        raise option_error(
            name, f"{value!r} is not a model in the data dir; use a name from `sdstudio models list`", field
        )


def check_path_options(settings: Settings, paths: DataPaths, field: str | None = None) -> None:
    """Refuse settings whose folders or model files lead outside the data dir."""
    for name in PATH_OPTIONS:
        check_path_option(paths, name, getattr(settings, name, ""), field)
    for name in MODEL_NAME_OPTIONS:
        check_model_name_option(paths, name, getattr(settings, name, ""), field)


@dataclass
class SettingsLoad:
    """The result of reading config.json: the settings and what the user should be told about them."""

    settings: Settings
    notices: tuple[str, ...] = ()


def load_settings(path: Path) -> SettingsLoad:
    """Read config.json; a missing file gives defaults, a corrupt one is backed up, a bad option is reset."""
    if not path.exists():
        return SettingsLoad(Settings())
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("top level is not a JSON object")
        return settings_from_saved(raw, path.name)
    except ValueError as exc:  # not JSON, or not about one option (a ValidationError is a ValueError)
        backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, backup)
        reason = str(exc).splitlines()[0]
        notice = f"{path} could not be read ({reason}); it was moved to {backup.name} and defaults are used"
        return SettingsLoad(Settings(), (notice,))


def settings_from_saved(values: dict[str, Any], source: str = "config.json") -> SettingsLoad:
    """Settings from saved values: each value refused now (NaN, out of range, a device gone) falls back to its default.

    One bad option must not cost the others, nor make every start or job fail; the user gets a notice per reset.
    """
    refused = {name: NOT_OPTIONS[name] for name in values if name in NOT_OPTIONS}
    notices: list[str] = []
    while True:  # each round drops at least one refused value, so this ends
        for name, message in refused.items():
            default = Settings.model_fields[name].default if name in Settings.model_fields else None
            reset = f"the default {default!r} is used" if name in Settings.model_fields else "it is ignored"
            notices.append(f"{source}: option {name}: {message}; {reset}")
        values = {name: value for name, value in values.items() if name not in refused}
        try:
            return SettingsLoad(Settings.model_validate(values), tuple(notices))
        except ValidationError as exc:
            refused = refused_options(exc)
            if not refused.keys() <= values.keys():
                raise  # not about one option: the file is corrupt


TEMP_FILE_SUFFIX = ".tmp"
STALE_TEMP_AGE_S = 60.0  # a temp file untouched this long belongs to no running write (writes keep touching it)


@contextmanager
def atomic_path(path: Path, replace: bool = True) -> Iterator[Path]:
    """A temporary file name beside `path` for writers that take a name (torch.save, safetensors, PIL).

    Write to the yielded path inside the block; when the block ends normally the file is
    synced and moved over `path` in one step, so a crash leaves the old file or the new one,
    never half of one (and at most a `.NAME.XXXX.tmp` that the next start removes). PIL
    cannot guess a format from ".tmp": pass `format=` to `Image.save`. With `replace=False`
    an existing `path` is kept and FileExistsError raised (the new file is dropped).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_FILE_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if replace:
            os.replace(tmp, path)
        else:
            _move_without_replacing(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _move_without_replacing(source: Path, target: Path) -> None:
    """Rename `source` to `target` unless `target` exists (FileExistsError), in one step where links work."""
    try:
        os.link(source, target)  # fails if target exists, even when another process just made it
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
        os.replace(source, target)
    else:
        source.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_stale_temp_files(folders: Iterable[Path], recursive: bool = True) -> list[Path]:
    """Delete the `.NAME.XXXX.tmp` files that killed atomic writes left in `folders`; returns what went.

    A file still being written keeps its modification time fresh, so only files untouched
    for STALE_TEMP_AGE_S are taken: another sdstudio process writing now is left alone.
    """
    removed: list[Path] = []
    cutoff = time.time() - STALE_TEMP_AGE_S
    for folder in folders:
        if not folder.is_dir():
            continue
        for root, _dirs, files in os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]:
            for name in files:
                if not (name.startswith(".") and name.endswith(TEMP_FILE_SUFFIX)):
                    continue
                candidate = Path(root) / name
                try:
                    if candidate.is_file() and candidate.stat().st_mtime < cutoff:
                        candidate.unlink()
                        removed.append(candidate)
                except OSError:  # gone meanwhile, or not ours to delete: leave it
                    continue
    return removed


def save_settings(settings: Settings, path: Path) -> None:
    """Write config.json atomically, unknown keys preserved."""
    text = json.dumps(settings.to_json_dict(), indent=4, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


class SettingsStore:
    """The one owner of settings: saved values, a per-run overlay, and per-job snapshots.

    - `saved` is what config.json holds; only `change` writes it.
    - the run overlay holds values that apply to this process only: the CLI's loading
      flags (`--precision`, `--vae`, ...) and a job's `override_settings` when it asked
      not to restore them afterwards (A1111's override_settings_restore_afterwards=False).
    - `current` is saved + overlay; `snapshot(overrides)` adds a job's overrides. Every
      result is a new frozen Settings, so a running job's view never changes under it.
    """

    def __init__(self, paths: DataPaths, saved: Settings | None = None, notices: list[str] | None = None):
        self.paths = paths
        self.notices: list[str] = list(notices or [])
        self._lock = threading.Lock()
        self._saved = self._confined(saved or Settings())
        self._overlay: dict[str, Any] = {}
        self._current = self._saved

    @classmethod
    def open(cls, paths: DataPaths) -> SettingsStore:
        """Load config.json from the data dir (defaults when missing, backup when corrupt)."""
        loaded = load_settings(paths.config_file)
        return cls(paths, loaded.settings, list(loaded.notices))

    def _confined(self, settings: Settings) -> Settings:
        """Saved options leading outside the data dir (an old or hand-edited config.json) fall back to defaults."""
        defaults = Settings()
        reset: dict[str, Any] = {}
        checks = [(name, check_path_option) for name in PATH_OPTIONS]
        checks += [(name, check_model_name_option) for name in MODEL_NAME_OPTIONS]
        for name, check in checks:
            try:
                check(self.paths, name, getattr(settings, name, ""))
            except InvalidRequest as exc:
                reset[name] = getattr(defaults, name)
                self.notices.append(f"config.json: option {exc}; the default {reset[name]!r} is used")
        return settings.merged(reset)

    @property
    def saved(self) -> Settings:
        """The values in config.json."""
        return self._saved

    @property
    def current(self) -> Settings:
        """The values in force for this run: saved + the run overlay."""
        return self._current

    @property
    def run_overlay(self) -> dict[str, Any]:
        """The options overlaid for this run only (a copy)."""
        with self._lock:
            return dict(self._overlay)

    def snapshot(self, overrides: dict[str, Any] | None = None, field: str = "override_settings") -> Settings:
        """What one job sees: the current values plus its own overrides (validated, paths confined)."""
        if not overrides:
            return self._current
        settings = self._current.merged(dict(overrides), field=field)
        check_path_options(settings, self.paths, field=field)
        return settings

    def overlay(self, values: dict[str, Any], field: str | None = None) -> Settings:
        """Apply `values` to this run only (never saved); returns the new current settings."""
        values = {k: v for k, v in values.items() if v is not None}
        with self._lock:
            overlay = {**self._overlay, **values}
            current = self._saved.merged(overlay, field=field)
            check_path_options(current, self.paths, field=field)
            self._overlay, self._current = overlay, current
            return current

    def check(self, changes: dict[str, Any], field: str | None = None) -> Settings:
        """The saved settings `changes` would give, validated and confined; nothing is applied or written."""
        settings = self._saved.merged(changes, field=field)
        check_path_options(settings, self.paths, field=field)
        return settings

    def pending(self, changes: dict[str, Any], field: str | None = None) -> Settings:
        """The settings in force if `changes` were saved now (validated); nothing is applied or written.

        For work that must succeed before a change is saved (loading a newly chosen checkpoint).
        """
        with self._lock:
            return self._after(self._changed(changes), field)[2]

    def change(self, changes: dict[str, Any], field: str | None = None) -> list[str]:
        """Validate, apply and save option changes; returns the names that changed.

        The one settings-change function of the API, the UI and the CLI. Nothing is written
        when any value is refused. A changed option leaves the run overlay: the user's newest
        choice wins over a flag given at start.
        """
        with self._lock:
            changed = self._changed(changes)
            if not changed:
                return []
            saved, overlay, current = self._after(changed, field)
            save_settings(saved, self.paths.config_file)
            self._saved, self._overlay, self._current = saved, overlay, current
            return sorted(changed)

    def _changed(self, changes: dict[str, Any]) -> dict[str, Any]:
        current = self._current.to_json_dict()
        return {k: v for k, v in changes.items() if k not in current or current[k] != v}

    def _after(self, changed: dict[str, Any], field: str | None) -> tuple[Settings, dict[str, Any], Settings]:
        """(saved, run overlay, current) once `changed` is saved: a changed option leaves the overlay."""
        saved = self.check(changed, field=field)
        overlay = {k: v for k, v in self._overlay.items() if k not in changed}
        return saved, overlay, saved.merged(overlay)
