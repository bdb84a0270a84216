"""The composition root: the one place that builds sdstudio's services from settings.

Front ends (CLI, API server, web UI) call `open_app` and use the services it holds;
no other module constructs services or reads config.json on its own. Heavy libraries
(torch, diffusers) are imported when `open_app` runs, not when this module is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.config import (
    MODEL_KINDS,
    DataPaths,
    Settings,
    SettingsStore,
    remove_stale_temp_files,
    resolve_data_dir,
)

if TYPE_CHECKING:
    from sdstudio.engine.checkpoints import CheckpointModels
    from sdstudio.engine.service import GenerationService
    from sdstudio.extensions.hypernetwork import HypernetworkLibrary
    from sdstudio.extensions.lora import LoraLibrary
    from sdstudio.extensions.manager import ExtensionManager
    from sdstudio.extensions.scripts.host import ScriptHost
    from sdstudio.models.controlnet import ControlNetLibrary
    from sdstudio.models.loader import LoadedCheckpoint
    from sdstudio.models.memory import ModelMemory
    from sdstudio.models.merge import CheckpointMerger
    from sdstudio.models.registry import ModelRegistry
    from sdstudio.postprocess.extras import PostprocessService
    from sdstudio.postprocess.interrogate import Interrogator
    from sdstudio.prompts.styles import StyleDatabase


@dataclass
class App:
    """The services of one running sdstudio, built over one data dir."""

    paths: DataPaths
    settings_store: SettingsStore
    memory: ModelMemory
    models: ModelRegistry
    styles: StyleDatabase
    loras: LoraLibrary
    hypernetworks: HypernetworkLibrary
    postprocess: PostprocessService
    engine: GenerationService
    checkpoints: CheckpointModels  # the engine's model source, for unload/reload and the loaded model
    interrogator: Interrogator
    scripts: ScriptHost  # scripts and extensions, with their callbacks

    @property
    def settings(self) -> Settings:
        """The settings in force now (saved values plus this run's overlay); read-only."""
        return self.settings_store.current

    @property
    def extensions(self) -> ExtensionManager:
        """Install, enable, disable and remove extensions (changes reload the scripts)."""
        from sdstudio.extensions.manager import ExtensionManager

        return ExtensionManager(self.scripts, self.settings_store)

    @property
    def merger(self) -> CheckpointMerger:
        """A1111's Checkpoint Merger over this data dir's models (writes into models/Stable-diffusion)."""
        from sdstudio.models.merge import CheckpointMerger

        return CheckpointMerger(self.models)

    @property
    def notices(self) -> list[str]:
        """Things the user should be told at start (a corrupt config.json, a refused option)."""
        return self.settings_store.notices


def open_app(data_dir: str | os.PathLike | None = None, run_options: dict[str, Any] | None = None) -> App:
    """Create the data dir layout if needed, load settings, and wire the services.

    `run_options` overlay the saved settings for this process only (the CLI's loading
    flags); they are never written to config.json.
    """
    from sdstudio import __version__
    from sdstudio.engine.checkpoints import CheckpointModels
    from sdstudio.engine.conditioning import encoder_for_checkpoint
    from sdstudio.engine.service import GenerationService
    from sdstudio.extensions.hypernetwork import HypernetworkBatchHook, HypernetworkLibrary
    from sdstudio.extensions.lora import LoraBatchHook, LoraLibrary
    from sdstudio.extensions.scripts.base import ScriptLists
    from sdstudio.extensions.scripts.host import ScriptHost
    from sdstudio.models.controlnet import ControlNetLibrary
    from sdstudio.models.memory import ModelMemory
    from sdstudio.models.registry import ModelRegistry
    from sdstudio.postprocess.extras import PostprocessService
    from sdstudio.postprocess.interrogate import Interrogator
    from sdstudio.postprocess.watermark import add_watermark
    from sdstudio.prompts.styles import StyleDatabase
    from sdstudio.prompts.tokenizer import clip_tokenizer

    paths = DataPaths(resolve_data_dir(data_dir)).ensure()
    # Temp files of writes a crash cut short (outputs are swept when a server starts: launch.py).
    remove_stale_temp_files([paths.root], recursive=False)
    remove_stale_temp_files([paths.cache_dir, *(folder for kind in MODEL_KINDS for folder in paths.folders(kind))])
    store = SettingsStore.open(paths)
    if run_options:
        store.overlay(run_options)
    memory = ModelMemory(
        budget_bytes=lambda: int(store.current.model_memory_budget_mb * 2**20),
        # How many of each kind stay loaded without a byte budget: one checkpoint (A1111's
        # sd_checkpoints_limit), the last upscaler, one model per face restorer, a few LoRAs.
        limits=lambda: {
            "checkpoint": store.current.sd_checkpoints_limit,
            "upscaler": 1,
            "face_restorer": 2,
            "lora": 4,
            "hypernetwork": 4,
            "controlnet": 2,
        },
    )
    models = ModelRegistry(paths)
    styles = StyleDatabase(paths.styles_file)
    loras = LoraLibrary(paths.folders("lora"), memory=memory)
    hypernetworks = HypernetworkLibrary(paths.folder("hypernetwork"), memory=memory)
    controlnets = ControlNetSource(ControlNetLibrary(models, memory=memory), store)
    postprocess = PostprocessService.build(paths, store, memory=memory)
    interrogator = Interrogator(paths, store, memory=memory, clip_tokenizer=lambda: clip_tokenizer("sd1"))
    scripts = ScriptHost(paths, store, lists=ScriptLists(upscaler_names=postprocess.upscalers.names))
    scripts.load()
    checkpoints = CheckpointModels(
        store,
        resolve=_registry_resolver(models),
        load=_checkpoint_loader(models),
        make_encoder=lambda loaded: encoder_for_checkpoint(loaded, paths),
        load_key=lambda path, settings: _external_vae_path(settings, models, path),
        memory=memory,
        on_loaded=lambda model: scripts.callbacks.call("model_loaded", model),
    )
    engine = GenerationService(
        store,
        paths,
        checkpoints,
        apply_styles=styles.apply_styles,
        upscale_image=lambda image, name, width, height: postprocess.upscalers.upscale(
            image, target=(width, height), name=name
        ),
        upscaler_names=postprocess.upscalers.names,
        restore_faces=lambda image, settings: (  # the job's model and weight (override_settings included)
            postprocess.face_restorers.restore(
                image, settings.face_restoration_model, codeformer_weight=settings.code_former_weight
            ).image
        ),
        watermark=add_watermark,
        version=f"sdstudio {__version__}",
        batch_hooks=[LoraBatchHook(loras), HypernetworkBatchHook(hypernetworks)],
        locate_checkpoint=checkpoints.locate,
        scripts_for_job=scripts.for_job,
        checkpoint_titles=lambda: [entry.title for entry in models.list("checkpoint", include_unusable=False)],
        vae_names=lambda: [entry.name for entry in models.list("vae", with_hashes=False, include_unusable=False)],
        interrogate=lambda image, model: interrogator.interrogate(image, model),
        controlnets=controlnets,
    )
    app = App(
        paths=paths,
        settings_store=store,
        memory=memory,
        models=models,
        styles=styles,
        loras=loras,
        hypernetworks=hypernetworks,
        postprocess=postprocess,
        engine=engine,
        checkpoints=checkpoints,
        interrogator=interrogator,
        scripts=scripts,
    )
    scripts.callbacks.call("app_started", app)
    return app


class ControlNetSource:
    """The ControlNet models units name (engine.scripting.ControlNetProvider): loaded on the settings' device,
    in fp16 on CUDA and fp32 elsewhere (their residuals join the UNet in its own dtype)."""

    def __init__(self, library: ControlNetLibrary, store: SettingsStore) -> None:
        self.library = library
        self.store = store

    def titles(self) -> list[str]:
        """The models as /controlnet/model_list lists them."""
        return self.library.titles()

    def title(self, name: str) -> str:
        """The full title of the model `name` finds."""
        return self.library.title(name)

    def load(self, name: str) -> Any:
        """The model `name` finds (title, stem or part of a name), loaded once."""
        import torch

        from sdstudio.models.devices import is_auto_precision, resolve_device, weights_dtype

        settings = self.store.current
        device = resolve_device(settings.device)
        if is_auto_precision(settings.precision):
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
        else:
            dtype = weights_dtype(settings.precision, device)
        return self.library.load(name, device, dtype)


def _registry_resolver(registry: ModelRegistry):
    """name -> (path, title, short hash) through the model registry."""

    def resolve(name: str) -> tuple[Path, str, str]:
        # "" = the default: first checkpoint in the data dir, else the bundled tiny model
        entry = registry.find_checkpoint(name) if name else registry.default_checkpoint()
        entry.require_usable()  # an empty or cut-short file is refused by name, with the reason, before any load
        return Path(entry.path), entry.model_name, entry.shorthash or ""

    return resolve


def _external_vae_path(settings: Settings, registry: ModelRegistry, checkpoint: Path) -> Path | None:
    """The VAE file sd_vae picks for `checkpoint` (a new NAME.vae.safetensors counts without a restart)."""
    entry = registry.vae_for(settings.sd_vae, Path(checkpoint))
    return entry.path if entry else None


def _checkpoint_loader(registry: ModelRegistry):
    """(path, settings) -> LoadedCheckpoint with the settings' VAE, device, precision and memory switches."""
    from sdstudio.models.devices import is_auto_precision, resolve_device, weights_dtype
    from sdstudio.models.loader import load_checkpoint
    from sdstudio.models.memory import MemoryOptions, apply_memory_options

    def load(path: Path, settings: Settings) -> LoadedCheckpoint:
        device = resolve_device(settings.device)
        vae = registry.vae_for(settings.sd_vae, Path(path))
        memory = MemoryOptions.from_settings(settings)
        offload = memory.cpu_offload and not device.startswith("cpu")
        loaded = load_checkpoint(
            path,
            device="cpu" if offload else device,
            dtype=None if is_auto_precision(settings.precision) else weights_dtype(settings.precision, device),
            no_half_vae=settings.no_half_vae,
            vae_path=vae.path if vae else None,
        )
        apply_memory_options(loaded, memory, device)
        loaded.device = device
        loaded.vae_hash = (vae.shorthash or "") if vae else ""
        return loaded

    return load
