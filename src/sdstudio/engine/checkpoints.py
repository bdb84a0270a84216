"""The engine's model source: checkpoints loaded through the model manager, one at a time.

`CheckpointModels(name_or_path)` returns a `GenerationModel` for a checkpoint name (as the
model registry lists it, or a hash), a file path (the CLI's --ckpt), or None for the
settings' `sd_model_checkpoint`. The last loaded model is kept; asking for another one
replaces it, so only one checkpoint occupies memory (A1111's default of one model). A change
of a setting that shapes the load (`LOAD_SETTINGS`: sd_vae, precision, memory switches)
reloads it on the next job.
The model manager's loader and the prompt layer's encoder are injected as callables so
tests can hand in tiny models and the engine never reaches into their internals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sdstudio.config import DataPaths, Settings
from sdstudio.engine.job_context import ConditioningEncoder, GenerationModel
from sdstudio.errors import ModelLoadError, NotFound

CheckpointLoader = Callable[[Path], Any]
"""`load(path) -> LoadedCheckpoint` (sdstudio.models.loader.load_checkpoint)."""

# Settings that change what a load produces: a change reloads the checkpoint.
LOAD_SETTINGS = ("sd_vae", "device", "precision", "no_half_vae", "vae_tiling", "attention_slicing", "cpu_offload")

EncoderFactory = Callable[[Any], ConditioningEncoder]
"""`make(loaded_checkpoint) -> ConditioningEncoder` (over sdstudio.prompts.conditioning)."""


def _first(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def generation_model_from_checkpoint(loaded: Any, encoder: ConditioningEncoder, name: str = "", short_hash: str = "") -> GenerationModel:
    """Adapt the model manager's LoadedCheckpoint to what processing uses."""
    vae = loaded.vae
    scheduler_config = dict(_first(loaded, "scheduler_config", default={}) or {})
    scaling = _first(loaded, "vae_scaling_factor", "scale_factor", "scaling_factor")
    if scaling is None:
        scaling = getattr(vae.config, "scaling_factor", 0.18215)
    family = str(_first(loaded, "family", "architecture", "model_type", default="sd1")).lower()
    return GenerationModel(
        unet=loaded.unet,
        vae=vae,
        encoder=encoder,
        scheduler_config=scheduler_config,
        prediction_type=str(_first(loaded, "prediction_type", default="epsilon")),
        vae_scaling_factor=float(scaling),
        vae_shift_factor=float(getattr(vae.config, "shift_factor", None) or 0.0),
        family="sdxl" if "xl" in family else family,
        name=name or str(_first(loaded, "name", "title", default="")),
        short_hash=short_hash or str(_first(loaded, "short_hash", "shorthash", default="") or ""),
        vae_name=str(getattr(loaded, "vae_name", "") or ""),
        vae_hash=str(getattr(loaded, "vae_hash", "") or ""),
        execution_device=torch.device(loaded.device) if isinstance(getattr(loaded, "device", None), (str, torch.device)) else None,
    )


class CheckpointModels:
    """Loads and keeps the current checkpoint; callable as the service's `model_source`."""

    def __init__(
        self,
        settings: Settings,
        paths: DataPaths,
        resolve: Callable[[str], tuple[Path, str, str]] | None = None,
        load: CheckpointLoader | None = None,
        make_encoder: EncoderFactory | None = None,
        load_key: Callable[[Path], Any] | None = None,
    ):
        self.settings = settings
        self.paths = paths
        self.resolve = resolve  # name -> (path, display name, short hash)
        self.load = load
        self.make_encoder = make_encoder
        self.load_key = load_key  # path -> what else the load depends on (e.g. the external VAE file)
        self._lock = threading.Lock()
        self._current: tuple[Path, GenerationModel] | None = None
        self._loaded_with: tuple = ()

    def _locate(self, name_or_path: str) -> tuple[Path, str, str]:
        candidate = Path(name_or_path).expanduser() if name_or_path else None
        if candidate is not None and candidate.suffix in (".safetensors", ".ckpt", ".pt", ".bin") and candidate.is_file():
            if self.resolve is not None:
                try:  # the registry knows its hash (cached) when the file is one of its own
                    return self.resolve(str(candidate.resolve()))
                except NotFound:
                    pass
            return candidate.resolve(), candidate.stem, ""
        if self.resolve is not None:
            return self.resolve(name_or_path)  # "" = the registry's default checkpoint
        inside = self.paths.folder("checkpoint") / name_or_path
        if inside.is_file():
            return inside.resolve(), inside.stem, ""
        raise NotFound(f"checkpoint {name_or_path!r} not found in {self.paths.folder('checkpoint')}; pass a file with --ckpt or see `sdstudio models list`")

    @property
    def current_path(self) -> Path | None:
        """The file of the loaded checkpoint, if one is loaded."""
        return self._current[0] if self._current is not None else None

    def unload(self) -> None:
        """Drop the loaded checkpoint (A1111's unload-checkpoint); the next job loads again."""
        import gc

        with self._lock:
            self._current = None
        gc.collect()

    def __call__(self, name_or_path: str | None) -> GenerationModel:
        wanted = name_or_path or self.settings.sd_model_checkpoint
        with self._lock:
            if not wanted and self.resolve is None:
                if self._current is not None:
                    return self._current[1]
                raise NotFound("no checkpoint selected: pass --ckpt FILE or --model NAME, or set sd_model_checkpoint")
            path, display, short_hash = self._locate(wanted)
            load_settings = tuple(getattr(self.settings, name, None) for name in LOAD_SETTINGS)
            if self.load_key is not None:
                load_settings += (self.load_key(path),)
            if self._current is not None and self._current[0] == path and self._loaded_with == load_settings:
                return self._current[1]
            if self.load is None or self.make_encoder is None:
                raise ModelLoadError("checkpoint loading is not available in this build (model manager or prompt encoder missing)")
            self._current = None  # drop the old model before loading the new one
            loaded = self.load(path)
            model = generation_model_from_checkpoint(loaded, self.make_encoder(loaded), display, short_hash)
            self._current, self._loaded_with = (path, model), load_settings
            return model
