"""Settings and the data directory.

One typed `Settings` object holds the user's options under A1111's option names where
A1111 has one, loaded from and saved to `config.json` in the data dir. Unknown keys are
kept (extensions and A1111 copy-overs put their own options there), writes are atomic,
and a corrupt file is moved aside with a clear message instead of crashing every start.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

DATA_DIR_ENV = "SDSTUDIO_DATA_DIR"

# -- Model files: the A1111 folder layout (SPEC.md §1), relative to the data dir ----------


@dataclass(frozen=True)
class ModelKind:
    """A kind of model file: the data-dir folders it is found in (new files go to the first) and its suffixes."""

    name: str
    folders: tuple[str, ...]
    suffixes: tuple[str, ...]

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
            found += [Path(root) / name for name in files if not name.startswith(".") and name.lower().endswith(self.suffixes)]
        return sorted(found, key=lambda path: path.relative_to(folder).as_posix().lower())


# Upscaler and face-restoration weights (read through spandrel) share their suffixes.
IMAGE_MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

MODEL_KINDS = {kind.name: kind for kind in (
    ModelKind("checkpoint", ("models/Stable-diffusion",), (".safetensors", ".ckpt")),
    ModelKind("vae", ("models/VAE",), (".safetensors", ".pt", ".ckpt", ".bin")),
    ModelKind("lora", ("models/Lora", "models/LyCORIS"), (".safetensors", ".pt", ".ckpt")),
    ModelKind("embedding", ("embeddings",), (".pt", ".bin", ".safetensors")),
    ModelKind("upscaler", ("models/ESRGAN", "models/RealESRGAN", "models/SwinIR", "models/DAT", "models/HAT"), IMAGE_MODEL_SUFFIXES),
    ModelKind("face_restorer", ("models/GFPGAN", "models/Codeformer"), IMAGE_MODEL_SUFFIXES),
)}
"""Every kind of model file, by name (the `--type` of `sdstudio models`)."""

PREVIEW_SUFFIXES = (".png", ".preview.png", ".jpg", ".preview.jpg", ".jpeg", ".preview.jpeg",
                    ".webp", ".preview.webp", ".gif", ".preview.gif")
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


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
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
        return [self.root / folder for folder in MODEL_KINDS[kind].folders]

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

    def resolve_inside(self, relative: str | os.PathLike) -> Path:
        """Resolve a user/request-supplied path, refusing anything outside the data dir."""
        candidate = (self.root / relative).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise ValueError(f"path {str(relative)!r} is outside the data dir {self.root}")
        return candidate

    def ensure(self) -> "DataPaths":
        """Create the data dir with the A1111 layout (idempotent)."""
        for kind in MODEL_KINDS:
            for folder in self.folders(kind):
                folder.mkdir(parents=True, exist_ok=True)
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return self


class Settings(BaseModel):
    """User options, under A1111's option names (shared.opts) where A1111 has one."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    # Model selection
    sd_model_checkpoint: str = ""
    sd_vae: str = "Automatic"
    CLIP_stop_at_last_layers: int = 1
    # Saving
    samples_save: bool = True
    samples_format: str = "png"
    grid_save: bool = True
    grid_format: str = "png"
    return_grid: bool = True
    save_images_add_number: bool = True
    save_to_dirs: bool = True
    directories_filename_pattern: str = "[date]"
    samples_filename_pattern: str = ""
    enable_pnginfo: bool = True
    jpeg_quality: int = 80
    webp_lossless: bool = False
    outdir_samples: str = ""
    outdir_txt2img_samples: str = "outputs/txt2img-images"
    outdir_img2img_samples: str = "outputs/img2img-images"
    outdir_extras_samples: str = "outputs/extras-images"
    outdir_grids: str = ""
    outdir_txt2img_grids: str = "outputs/txt2img-grids"
    outdir_img2img_grids: str = "outputs/img2img-grids"
    # Sampling
    eta_noise_seed_delta: int = 0
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0
    s_noise: float = 1.0
    randn_source: str = "CPU"
    # Progress / previews
    show_progress_every_n_steps: int = 10
    live_previews_enable: bool = True
    # Postprocessing
    face_restoration_model: str = "CodeFormer"
    code_former_weight: float = 0.5
    ESRGAN_tile: int = 192
    ESRGAN_tile_overlap: int = 8
    enable_invisible_watermark: bool = False
    # Device and precision (A1111 has these as command-line flags; here they persist)
    device: str = "auto"
    precision: str = "auto"
    no_half_vae: bool = False
    vae_tiling: bool = False
    attention_slicing: bool = False
    cpu_offload: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        """All options, the unknown keys from config.json included."""
        return self.model_dump(mode="json")


@dataclass
class SettingsLoad:
    """The result of reading config.json: the settings and any notice for the user."""

    settings: Settings
    notice: str | None = None


def load_settings(path: Path) -> SettingsLoad:
    """Read config.json; a missing file gives defaults, a corrupt one is backed up."""
    if not path.exists():
        return SettingsLoad(Settings())
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("top level is not a JSON object")
        return SettingsLoad(Settings.model_validate(raw))
    except (ValueError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            reason = f"option {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        else:
            reason = str(exc).splitlines()[0]
        backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, backup)
        return SettingsLoad(
            Settings(),
            notice=f"{path} could not be read ({reason}); it was moved to {backup.name} and defaults are used",
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_settings(settings: Settings, path: Path) -> None:
    """Write config.json atomically, unknown keys preserved."""
    text = json.dumps(settings.to_json_dict(), indent=4, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
