"""The composition root: the one place that builds sdstudio's services from Settings.

Front ends (CLI, API server, web UI) call `open_app` and use the services it holds;
no other module constructs services or reads config.json on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio.config import DataPaths, Settings, load_settings, resolve_data_dir, save_settings

if TYPE_CHECKING:  # the engine imports torch; only build_engine needs it at run time
    from sdstudio.engine.service import GenerationService
    from sdstudio.extensions.lora import LoraLibrary
    from sdstudio.models.registry import ModelRegistry
    from sdstudio.postprocess.extras import PostprocessService
    from sdstudio.prompts.styles import StyleDatabase


@dataclass
class App:
    """The services of one running sdstudio, built over one data dir."""

    paths: DataPaths
    settings: Settings
    notices: list[str] = field(default_factory=list)
    engine: "GenerationService | None" = None
    postprocess: "PostprocessService | None" = None
    models: "ModelRegistry | None" = None
    styles: "StyleDatabase | None" = None
    loras: "LoraLibrary | None" = None

    def save_settings(self) -> None:
        """Persist the current settings to config.json (atomically)."""
        save_settings(self.settings, self.paths.config_file)


def open_app(data_dir: str | os.PathLike | None = None) -> App:
    """Create the data dir layout if needed, load settings, and wire the services."""
    paths = DataPaths(resolve_data_dir(data_dir)).ensure()
    loaded = load_settings(paths.config_file)
    notices = [loaded.notice] if loaded.notice else []
    settings = loaded.settings
    from sdstudio.models.registry import ModelRegistry
    from sdstudio.prompts.styles import StyleDatabase

    from sdstudio.extensions.lora import LoraLibrary

    models = ModelRegistry(paths)
    styles = StyleDatabase(paths.styles_file)
    loras = LoraLibrary(paths.folders("lora"))
    postprocess = build_postprocess(settings, paths)
    engine = build_engine(settings, paths, postprocess, models=models, styles=styles, loras=loras)
    return App(paths=paths, settings=settings, notices=notices, engine=engine, postprocess=postprocess,
               models=models, styles=styles, loras=loras)


def build_postprocess(settings: Settings, paths: DataPaths) -> "PostprocessService | None":
    """Upscalers, face restoration and Extras (models are loaded on first use, not here)."""
    try:
        from sdstudio.postprocess.extras import PostprocessService
    except ImportError:
        return None
    return PostprocessService.build(paths, settings, device=settings.device)


def build_engine(settings: Settings, paths: DataPaths, postprocess: "PostprocessService | None" = None,
                 models: "ModelRegistry | None" = None, styles: "StyleDatabase | None" = None,
                 loras: "LoraLibrary | None" = None) -> "GenerationService":
    """The generation service over the model manager's loader and the prompt layer."""
    from sdstudio import __version__
    from sdstudio.engine.checkpoints import CheckpointModels
    from sdstudio.engine.service import GenerationService
    from sdstudio.prompts.styles import StyleDatabase

    from sdstudio.models.registry import ModelRegistry

    models = models or ModelRegistry(paths)
    checkpoints = CheckpointModels(settings, paths, resolve=_registry_resolver(paths, models),
                                   load=_checkpoint_loader(settings, models), make_encoder=_encoder_factory(paths),
                                   load_key=lambda path: _external_vae_path(settings, models, path))
    styles = styles or StyleDatabase(paths.styles_file)
    upscale_image, restore_faces = _postprocess_hooks(settings, paths, postprocess)
    try:
        from sdstudio.postprocess.watermark import add_watermark
    except ImportError:
        add_watermark = None
    from sdstudio.extensions.lora import LoraBatchHook, LoraLibrary

    loras = loras or LoraLibrary(paths.folders("lora"))
    return GenerationService(
        settings, paths, checkpoints, apply_styles=styles.apply_styles, upscale_image=upscale_image,
        restore_faces=restore_faces, watermark=add_watermark, version=f"sdstudio {__version__}",
        batch_hooks=[LoraBatchHook(loras)],
    )


def _postprocess_hooks(settings: Settings, paths: DataPaths, postprocess: "PostprocessService | None" = None):
    """Hires-fix model upscalers and face restoration from the postprocess registries."""
    if postprocess is None:
        postprocess = build_postprocess(settings, paths)
    if postprocess is None:
        return None, None
    upscalers = postprocess.upscalers
    faces = postprocess.face_restorers

    def upscale_image(image, name: str, width: int, height: int):
        return upscalers.upscale(image, target=(width, height), name=name)

    def restore_faces(image):
        return faces.restore(image, settings.face_restoration_model).image

    return upscale_image, restore_faces


def _registry_resolver(paths: DataPaths, registry: "ModelRegistry | None" = None):
    """name -> (path, title, short hash) through the model registry, when it is built."""
    try:
        from sdstudio.models.registry import ModelRegistry
    except ImportError:
        return None

    registry = registry or ModelRegistry(paths)

    def resolve(name: str):
        # "" = the default: first checkpoint in the data dir, else the bundled tiny model
        entry = registry.find_checkpoint(name) if name else registry.default_checkpoint()
        return Path(entry.path), entry.model_name, entry.shorthash or ""

    return resolve


def _external_vae_path(settings: Settings, registry: "ModelRegistry", checkpoint: Path) -> Path | None:
    """The VAE file sd_vae picks for `checkpoint` (a new NAME.vae.safetensors counts without a restart)."""
    entry = registry.vae_for(settings.sd_vae, Path(checkpoint))
    return entry.path if entry else None


def _checkpoint_loader(settings: Settings, registry: "ModelRegistry"):
    """path -> LoadedCheckpoint with the settings' VAE (sd_vae), device, precision and memory switches."""
    try:
        from sdstudio.models.loader import load_checkpoint  # type: ignore[import-not-found]
    except ImportError:
        return None
    from sdstudio.models.memory import MemoryOptions, apply_memory_options

    def load(path):
        import torch

        device = settings.device if settings.device not in ("", "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
        named = {"fp32": torch.float32, "float32": torch.float32, "full": torch.float32, "fp16": torch.float16,
                 "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        dtype = named.get(str(settings.precision).lower()) or (torch.float16 if device.startswith("cuda") else torch.float32)
        vae = registry.vae_for(settings.sd_vae, Path(path))
        memory = MemoryOptions.from_settings(settings)
        offload = memory.cpu_offload and not device.startswith("cpu")
        loaded = load_checkpoint(path, device="cpu" if offload else device, dtype=dtype, no_half_vae=settings.no_half_vae,
                                 vae_path=vae.path if vae else None)
        apply_memory_options(loaded, memory, device)
        loaded.device = device
        loaded.vae_hash = (vae.shorthash or "") if vae else ""
        return loaded

    return load


def _encoder_factory(paths: DataPaths):
    try:
        from sdstudio.engine.conditioning import encoder_for_checkpoint
    except ImportError:
        return None
    return lambda loaded: encoder_for_checkpoint(loaded, paths)
