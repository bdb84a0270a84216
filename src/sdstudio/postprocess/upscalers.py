"""Upscalers: the A1111 list (None, Lanczos, Nearest, model files) and tiled model inference.

Names and behaviour follow A1111 (modules/upscaler.py, modules/realesrgan_model.py,
modules/upscaler_utils.py): built-ins first, then model files sorted by lower-cased name;
files in models/ESRGAN (and the SwinIR/DAT/HAT folders) are named by their file stem, the
published Real-ESRGAN files by A1111's names ("R-ESRGAN 4x+"...). `upscale` applies a model
up to three times until the requested size is reached, then resizes with Lanczos to the
destination, which is rounded down to a multiple of 8 as A1111's `Upscaler.upscale` does.

Model inference is tiled (settings ESRGAN_tile / ESRGAN_tile_overlap) and tiles are blended
with feathered weights, assembled one row of tiles at a time, so memory stays bounded by
the output image plus one strip of tiles. Differences from A1111 (on purpose): tiles are
fed to models as RGB, which is what ESRGAN/Real-ESRGAN were trained on (A1111 feeds BGR),
and overlaps are cross-faded instead of A1111's grid paste.
"""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sdstudio.config import MODEL_KINDS, DataPaths, SettingsStore, atomic_write_bytes
from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound, SdStudioError
from sdstudio.models.memory import ModelMemory
from sdstudio.postprocess.model_files import LoadedModel, SpandrelModels, load_spandrel_model

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

MAX_MODEL_PASSES = 3
"""A1111 applies a model at most three times to reach the requested scale."""


@dataclass(frozen=True)
class PillowUpscaler:
    """A built-in upscaler row: name and Pillow filter (None = no upscaling model)."""

    name: str
    resample: Image.Resampling | None


BUILTIN_UPSCALERS = (
    PillowUpscaler("None", None),
    PillowUpscaler("Lanczos", LANCZOS),
    PillowUpscaler("Nearest", NEAREST),
)


REALESRGAN_NAMES = {
    "realesr-general-x4v3": "R-ESRGAN General 4xV3",
    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
    "realesr-animevideov3": "R-ESRGAN AnimeVideo",
    "realesrgan_x4plus": "R-ESRGAN 4x+",
    "realesrgan_x4plus_anime_6b": "R-ESRGAN 4x+ Anime6B",
    "realesrgan_x2plus": "R-ESRGAN 2x+",
}
"""A1111's display names for the published Real-ESRGAN files (modules/realesrgan_model.py), by lower-cased stem."""
REALESRGAN_FOLDER = "RealESRGAN"
"""The upscaler folder whose files go by those names."""


@dataclass(frozen=True)
class LatentUpscaleMode:
    """A hires-fix latent upscale mode: torch interpolate mode and antialias flag."""

    mode: str
    antialias: bool


LATENT_UPSCALE_MODES = {
    "Latent": LatentUpscaleMode("bilinear", False),
    "Latent (antialiased)": LatentUpscaleMode("bilinear", True),
    "Latent (bicubic)": LatentUpscaleMode("bicubic", False),
    "Latent (bicubic antialiased)": LatentUpscaleMode("bicubic", True),
    "Latent (nearest)": LatentUpscaleMode("nearest", False),
    "Latent (nearest-exact)": LatentUpscaleMode("nearest-exact", False),
}
"""A1111's shared.latent_upscale_modes (the /sdapi/v1/latent-upscale-modes list)."""


def upscale_latent(latent, height: int, width: int, mode_name: str):
    """Resize a (B, C, H, W) latent to (height, width) the way A1111's hires fix does."""
    import torch.nn.functional as F

    if mode_name not in LATENT_UPSCALE_MODES:
        raise InvalidRequest(
            "hr_upscaler", f"unknown latent upscale mode {mode_name!r}; available: {', '.join(LATENT_UPSCALE_MODES)}"
        )
    mode = LATENT_UPSCALE_MODES[mode_name]
    # torch only implements antialias for bilinear/bicubic, which is all A1111 uses it with.
    return F.interpolate(latent, size=(height, width), mode=mode.mode, antialias=mode.antialias)


@dataclass(frozen=True)
class UpscalerInfo:
    """One row of the upscaler list, with A1111's /sdapi/v1/upscalers fields."""

    name: str
    model_name: str | None = None
    model_path: str | None = None
    scale: float | None = None
    usable: bool = True
    reason: str | None = None
    """Why a model file cannot be used (unrecognised architecture, corrupt or unsafe file)."""

    def to_api_dict(self) -> dict[str, Any]:
        """The A1111 wire form: name, model_name, model_path, model_url, scale."""
        return {
            "name": self.name,
            "model_name": self.model_name,
            "model_path": self.model_path,
            "model_url": None,
            "scale": self.scale,
        }


# ---------------------------------------------------------------------------------------
# Tiled inference
# ---------------------------------------------------------------------------------------


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering `length`, neighbours overlapping by >= `overlap`.

    The fewest tiles that keep the requested overlap, spread evenly so the last one ends at
    the border (no thin last tile, unlike a plain stride).
    """
    if tile <= 0 or tile >= length:
        return [0]
    overlap = max(0, min(overlap, tile - 1))
    count = math.ceil((length - overlap) / (tile - overlap))
    if count <= 1:
        return [0]
    span = length - tile
    return [round(i * span / (count - 1)) for i in range(count)]


def axis_blend_weights(starts: list[int], tile: int, length: int, ramp: int) -> list[np.ndarray]:
    """Per-tile 1-D weights along one axis that sum to 1 everywhere (feathered over `ramp`).

    Each tile fades in/out linearly over `ramp` pixels at edges shared with a neighbour (not
    at the image border); dividing by the sum makes the weights a partition of unity, and
    since the 2-D weight is the product of the two axes, the 2-D blend needs no normalising.
    """
    raw = []
    position = np.arange(tile, dtype=np.float32) + 0.5
    for start in starts:
        weight = np.ones(tile, dtype=np.float32)
        if ramp > 0:
            if start > 0:
                weight = np.minimum(weight, position / ramp)
            if start + tile < length:
                weight = np.minimum(weight, position[::-1] / ramp)
        raw.append(weight)
    total = np.zeros(length, dtype=np.float32)
    for start, weight in zip(starts, raw):
        total[start : start + tile] += weight
    return [weight / total[start : start + tile] for start, weight in zip(starts, raw)]


def _write_rows(values: np.ndarray, target: np.ndarray, chunk: int = 32) -> None:
    """Blended float rows in [0, 1] -> uint8 rows, a few rows at a time (small temporaries)."""
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk] * 255.0
        np.rint(part, out=part)
        np.clip(part, 0, 255, out=part)
        target[start : start + chunk] = part


def upscale_array_tiled(
    run_model: Callable[[Any], Any],
    image: np.ndarray,
    scale: int,
    tile: int,
    overlap: int,
    *,
    device: str = "cpu",
    dtype=None,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Run an image model over an (H, W, 3) uint8 RGB array in feathered tiles; returns uint8 RGB.

    `run_model` takes a (1, 3, h, w) float tensor in [0, 1] and returns (1, 3, h*scale, w*scale).
    `tile` <= 0 runs the whole image at once. `on_tile(done, total)` is called after each tile
    (and may raise to cancel).
    """
    import torch

    height, width = image.shape[:2]
    tile_h = height if tile <= 0 else min(tile, height)
    tile_w = width if tile <= 0 else min(tile, width)
    overlap = max(0, overlap)
    ys = tile_starts(height, tile_h, overlap)
    xs = tile_starts(width, tile_w, overlap)
    out_h, out_w = height * scale, width * scale
    weights_y = axis_blend_weights([y * scale for y in ys], tile_h * scale, out_h, overlap * scale)
    weights_x = axis_blend_weights([x * scale for x in xs], tile_w * scale, out_w, overlap * scale)
    dtype = dtype or torch.float32
    source = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0)

    output = np.empty((out_h, out_w, 3), dtype=np.uint8)
    # One float band as tall as a tile row holds the rows still being blended; it slides down
    # the image, and rows are written to the uint8 output as soon as no later tile touches them.
    # Memory beyond the output is this band and one tile, whatever the image size.
    band_h = tile_h * scale
    band = np.zeros((band_h, out_w, 3), dtype=np.float32)
    band_top = 0
    total_tiles, done = len(ys) * len(xs), 0
    for row, y in enumerate(ys):
        top = y * scale
        if top > band_top:  # rows above `top` were finished with the previous tile row
            shift = top - band_top
            band[: band_h - shift] = band[shift:]
            band[band_h - shift :] = 0.0
            band_top = top
        for column, x in enumerate(xs):
            patch = (
                source[..., y : y + tile_h, x : x + tile_w]
                .to(device=device, dtype=dtype, memory_format=torch.contiguous_format)
                .div_(255.0)
            )
            with torch.inference_mode():
                result = run_model(patch)
                if tuple(result.shape[-2:]) != (tile_h * scale, tile_w * scale):
                    raise ModelLoadError(
                        f"model returned {tuple(result.shape[-2:])} for a {tile_h}x{tile_w} tile, "
                        f"expected scale {scale}"
                    )
                values = result[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            values *= weights_y[row][:, None, None]
            values *= weights_x[column][None, :, None]
            band[:, x * scale : (x + tile_w) * scale] += values
            del result, values
            done += 1
            if on_tile is not None:
                on_tile(done, total_tiles)
        final_until = ys[row + 1] * scale if row + 1 < len(ys) else out_h
        _write_rows(band[: final_until - top], output[top:final_until])
    return output


# ---------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------


@dataclass
class _ModelEntry:
    info: UpscalerInfo
    path: Path
    stamp: tuple[int, int]


class UpscalerRegistry:
    """The upscalers of one data dir: listing (A1111 names) and upscaling by name."""

    def __init__(
        self,
        paths: DataPaths,
        settings: SettingsStore,
        device: str = "cpu",
        memory: ModelMemory | None = None,
        spandrel_registry: Any = None,
    ):
        self.paths = paths
        self.settings_store = settings
        self.models = SpandrelModels("upscaler", device, memory, spandrel_registry)
        self._entries: dict[str, _ModelEntry] | None = None
        self._probe_cache: dict[Path, tuple[tuple[int, int], UpscalerInfo]] = {}

    # -- listing -----------------------------------------------------------------------

    @property
    def device(self) -> str:
        """The torch device models run on ("auto" resolved on first use)."""
        return self.models.device

    @property
    def probe_cache_file(self) -> Path:
        """Where probe results persist between runs, so a restart does not load every model again."""
        return self.paths.cache_dir / "upscalers.json"

    def _read_probe_cache(self) -> None:
        try:
            rows = json.loads(self.probe_cache_file.read_text(encoding="utf-8"))
            for row in rows:
                info = UpscalerInfo(**row["info"])
                self._probe_cache.setdefault(Path(row["path"]), ((int(row["size"]), int(row["mtime_ns"])), info))
        except (OSError, ValueError, TypeError, KeyError):
            pass  # a missing or unreadable cache only costs a re-probe

    def _write_probe_cache(self) -> None:
        rows = [
            {"path": str(path), "size": stamp[0], "mtime_ns": stamp[1], "info": asdict(info)}
            for path, (stamp, info) in sorted(self._probe_cache.items())
            if info.usable  # failures are probed again next time (the loader may have been fixed)
        ]
        try:
            atomic_write_bytes(self.probe_cache_file, json.dumps(rows, indent=1).encode("utf-8"))
        except OSError:
            pass

    def refresh(self) -> None:
        """Rescan the upscaler folders (files probed again only when changed)."""
        if not self._probe_cache:
            self._read_probe_cache()
        before = dict(self._probe_cache)
        entries: dict[str, _ModelEntry] = {}
        for folder in self.paths.folders("upscaler"):
            for path in MODEL_KINDS["upscaler"].files_in(folder):
                stamp = _file_stamp(path)
                info = self._probe(path, stamp, folder)
                name = info.name
                suffix = 2
                while name in entries or name in {b.name for b in BUILTIN_UPSCALERS}:
                    name = f"{info.name} ({suffix})"
                    suffix += 1
                if name != info.name:
                    info = UpscalerInfo(name, info.model_name, info.model_path, info.scale, info.usable, info.reason)
                entries[name] = _ModelEntry(info, path, stamp)
        self._entries = entries
        if self._probe_cache != before:
            self._write_probe_cache()

    def _model_entries(self) -> dict[str, _ModelEntry]:
        """The model-file upscalers by name, the folders scanned on first use."""
        if self._entries is None:
            self.refresh()
        assert self._entries is not None  # refresh() always sets it
        return self._entries

    def list(self, include_unusable: bool = True) -> list[UpscalerInfo]:
        """Built-ins first, then model files sorted by lower-cased name (A1111's order)."""
        resizes = [UpscalerInfo(b.name, None, None, None) for b in BUILTIN_UPSCALERS]
        models = sorted((e.info for e in self._model_entries().values()), key=lambda i: i.name.lower())
        if not include_unusable:
            models = [m for m in models if m.usable]
        return resizes + models

    def names(self) -> builtins.list[str]:  # `list` here is the method above
        """Names of the usable upscalers."""
        return [info.name for info in self.list(include_unusable=False)]

    def get(self, name: str, field: str = "upscaler") -> UpscalerInfo:
        """The upscaler called `name`; unknown names are an error listing the available ones."""
        for info in self.list():
            if info.name == name:
                if not info.usable:
                    raise ModelLoadError(f"upscaler {name!r} cannot be used: {info.reason}")
                return info
        raise NotFound(f"{field}: unknown upscaler {name!r}; available: {', '.join(self.names())}")

    # -- upscaling ---------------------------------------------------------------------

    def upscale(
        self,
        image: Image.Image,
        scale: float | None = None,
        target: tuple[int, int] | None = None,
        name: str = "Lanczos",
        *,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        """Upscale by `scale` (A1111 Upscaler.upscale: size rounded down to a multiple of 8)
        or to exactly `target` (w, h) (A1111 images.resize_image, resize mode "just resize")."""
        info = self.get(name)
        image = image.convert("RGB")
        if target is not None:
            target_w, target_h = int(target[0]), int(target[1])
            if target_w < 1 or target_h < 1:
                raise InvalidRequest("target", f"size must be positive, got {target_w}x{target_h}")
            factor = max(target_w / image.width, target_h / image.height)
            if factor > 1.0 and info.name != "None":
                image = self._upscale_by(image, info, factor, on_tile)
            if image.size != (target_w, target_h):
                image = image.resize((target_w, target_h), resample=LANCZOS)
            return image
        if scale is None or not math.isfinite(scale) or scale <= 0:
            raise InvalidRequest("scale", f"must be a positive number, got {scale!r}")
        return self._upscale_by(image, info, float(scale), on_tile)

    def _upscale_by(self, image: Image.Image, info: UpscalerInfo, scale: float, on_tile) -> Image.Image:
        dest_w = int((image.width * scale) // 8 * 8)
        dest_h = int((image.height * scale) // 8 * 8)
        if dest_w < 8 or dest_h < 8:
            raise InvalidRequest("scale", f"{image.width}x{image.height} scaled by {scale:g} is smaller than 8 pixels")
        builtin = next((b for b in BUILTIN_UPSCALERS if b.name == info.name), None)
        if builtin is not None:
            if builtin.resample is not None:
                image = image.resize((int(image.width * scale), int(image.height * scale)), resample=builtin.resample)
        else:
            model = self.load_model(info.name)
            for _ in range(MAX_MODEL_PASSES):
                before = image.size
                image = self.run_model(model, image, on_tile=on_tile)
                if image.size == before or (image.width >= dest_w and image.height >= dest_h):
                    break
        if image.size != (dest_w, dest_h):
            image = image.resize((dest_w, dest_h), resample=LANCZOS)
        return image

    def load_model(self, name: str) -> LoadedModel:
        """The spandrel model of a model-file upscaler (kept by the memory owner between uses)."""
        self.get(name)
        entry = self._model_entries().get(name)
        if entry is None:
            raise InvalidRequest("upscaler", f"{name!r} is a built-in resize, not a model upscaler")
        return self.models.load(entry.path)

    def run_model(self, model: LoadedModel, image: Image.Image, *, on_tile=None) -> Image.Image:
        """One pass of a model over an image, tiled per settings ESRGAN_tile / ESRGAN_tile_overlap."""
        import torch

        descriptor = model.descriptor
        dtype = torch.float16 if (str(self.device).startswith("cuda") and descriptor.supports_half) else torch.float32
        if descriptor.dtype != dtype:
            descriptor.to(dtype)
        array = upscale_array_tiled(
            descriptor,
            np.asarray(image.convert("RGB")),
            model.scale,
            int(self.settings_store.current.ESRGAN_tile),
            int(self.settings_store.current.ESRGAN_tile_overlap),
            device=self.device,
            dtype=dtype,
            on_tile=on_tile,
        )
        return Image.fromarray(array, "RGB")

    def unload(self) -> None:
        """Drop the loaded models (frees their memory)."""
        self.models.unload()

    # -- probing -----------------------------------------------------------------------

    def _probe(self, path: Path, stamp: tuple[int, int], folder: Path) -> UpscalerInfo:
        cached = self._probe_cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        name = display_name(path, folder)
        try:
            loaded = load_spandrel_model(path, self.models.spandrel_registry)
            if loaded.purpose not in ("SR", "Restoration"):
                raise ModelLoadError(
                    f"{path.name}: a {loaded.architecture} {loaded.purpose} model (face restoration), not an upscaler"
                )
            info = UpscalerInfo(name, loaded.architecture, str(path), float(loaded.scale))
            del loaded
        except SdStudioError as exc:
            info = UpscalerInfo(name, None, str(path), None, usable=False, reason=str(exc))
        self._probe_cache[path] = (stamp, info)
        return info


def display_name(path: Path, folder: Path) -> str:
    """A1111's name for a model file: the published Real-ESRGAN names, else the file stem."""
    if folder.name == REALESRGAN_FOLDER:
        known = REALESRGAN_NAMES.get(path.stem.lower())
        if known:
            return known
    return path.stem


def _file_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
