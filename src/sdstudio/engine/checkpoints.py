"""The engine's model source: checkpoints loaded through the model manager, one at a time.

`CheckpointModels(name_or_path, settings)` returns a `GenerationModel` for a checkpoint name
(as the model registry lists it, or a hash), a file path (the CLI's --ckpt), or None for the
settings' `sd_model_checkpoint`. The last loaded model is kept; asking for another one
replaces it, so only one checkpoint occupies memory (A1111's default of one model). A job's
settings that shape the load (`LOAD_SETTINGS`: sd_vae, precision, memory switches) reload
it when they differ from the loaded one's.
The model manager's loader and the prompt layer's encoder are injected as callables so
tests can hand in tiny models and the engine never reaches into their internals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdstudio.config import Settings, SettingsStore
from sdstudio.engine.job_context import ConditioningEncoder, GenerationModel
from sdstudio.errors import NotFound
from sdstudio.models.memory import ModelMemory, module_bytes

if TYPE_CHECKING:
    from sdstudio.models.loader import LoadedCheckpoint

CheckpointLoader = Callable[[Path, Settings], "LoadedCheckpoint"]
"""`load(path, settings) -> LoadedCheckpoint` (over sdstudio.models.loader.load_checkpoint)."""

MEMORY_KIND = "checkpoint"
CHECKPOINT_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")  # what --ckpt accepts as a file

# Settings that change what a load produces: a change reloads the checkpoint.
LOAD_SETTINGS = ("sd_vae", "device", "precision", "no_half_vae", "vae_tiling", "attention_slicing", "cpu_offload")

EncoderFactory = Callable[["LoadedCheckpoint"], ConditioningEncoder]
"""`make(loaded_checkpoint) -> ConditioningEncoder` (over sdstudio.prompts.conditioning)."""


def generation_model_from_checkpoint(
    loaded: LoadedCheckpoint, encoder: ConditioningEncoder, name: str = "", short_hash: str = ""
) -> GenerationModel:
    """Adapt the model manager's LoadedCheckpoint to what processing uses."""
    vae = loaded.vae
    return GenerationModel(
        unet=loaded.unet,
        vae=vae,
        encoder=encoder,
        scheduler_config=dict(loaded.scheduler_config),
        prediction_type=loaded.prediction_type,
        vae_scaling_factor=float(loaded.vae_scaling_factor),
        vae_shift_factor=float(getattr(vae.config, "shift_factor", None) or 0.0),
        family="sdxl" if "xl" in loaded.family else loaded.family,
        name=name or loaded.path.stem,
        short_hash=short_hash,
        vae_name=loaded.vae_name,
        vae_hash=loaded.vae_hash,
        execution_device=torch.device(loaded.device),
    )


class CheckpointModels:
    """Loads checkpoints through the memory owner; callable as the service's `model_source`."""

    def __init__(
        self,
        settings: SettingsStore,
        resolve: Callable[[str], tuple[Path, str, str]],
        load: CheckpointLoader,
        make_encoder: EncoderFactory,
        load_key: Callable[[Path, Settings], Any] = lambda path, settings: None,
        memory: ModelMemory | None = None,
        on_loaded: Callable[[GenerationModel], object] | None = None,
    ):
        self.settings_store = settings
        self.on_loaded = on_loaded  # told of each freshly loaded model (the extensions' model_loaded callbacks)
        self.resolve = resolve  # name or path -> (path, display name, short hash); "" = the default
        self.load = load
        self.make_encoder = make_encoder
        self.load_key = load_key  # (path, settings) -> what else the load depends on (e.g. the external VAE file)
        self.memory = memory if memory is not None else ModelMemory(limits={"checkpoint": 1})
        self._lock = threading.Lock()

    def locate(self, name_or_path: str | None, settings: Settings | None = None) -> Path:
        """The file a checkpoint name or path means (None: the settings' `sd_model_checkpoint`), without loading it."""
        settings = settings or self.settings_store.current
        return self._locate(name_or_path or settings.sd_model_checkpoint)[0]

    def _locate(self, name_or_path: str) -> tuple[Path, str, str]:
        candidate = Path(name_or_path).expanduser() if name_or_path else None
        if candidate is not None and candidate.suffix in CHECKPOINT_FILE_SUFFIXES and candidate.is_file():
            try:  # the registry knows its hash (cached) when the file is one of its own
                return self.resolve(str(candidate.resolve()))
            except NotFound:
                return candidate.resolve(), candidate.stem, ""
        return self.resolve(name_or_path)

    @property
    def current_model(self) -> GenerationModel | None:
        """The most recently used loaded model, if any (read-only; loading goes through the call)."""
        keys = self.memory.keys(MEMORY_KIND)
        return self.memory.peek(keys[-1]) if keys else None

    def unload(self) -> None:
        """Drop the loaded checkpoints (A1111's unload-checkpoint); the next job loads again."""
        self.memory.release_kind(MEMORY_KIND)

    def __call__(self, name_or_path: str | None, settings: Settings | None = None) -> GenerationModel:
        """The model for a checkpoint (None: `sd_model_checkpoint`), loaded with `settings` (default: current)."""
        settings = settings or self.settings_store.current
        wanted = name_or_path or settings.sd_model_checkpoint
        with self._lock:
            path, display, short_hash = self._locate(wanted)
            shaping = [getattr(settings, name, None) for name in LOAD_SETTINGS] + [self.load_key(path, settings)]
            key = f"{MEMORY_KIND}:{path}:{shaping!r}"

            weights_bytes = 0

            def load() -> GenerationModel:
                nonlocal weights_bytes
                loaded = self.load(path, settings)
                weights_bytes = module_bytes(loaded.unet, loaded.vae, loaded.text_encoder, loaded.text_encoder_2)
                model = generation_model_from_checkpoint(loaded, self.make_encoder(loaded), display, short_hash)
                if self.on_loaded is not None:
                    self.on_loaded(model)
                return model

            return self.memory.get_or_load(key, MEMORY_KIND, load, size_of=lambda _: weights_bytes)
