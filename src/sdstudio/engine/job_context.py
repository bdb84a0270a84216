"""What a generation job gets from the outside: `JobContext` and the types of its fields.

The model (with its prompt encoder), progress events, batch hooks (LoRA) and the hires-fix
upscaler come in through a `JobContext`; processing.py knows nothing else of the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from sdstudio.config import Settings
from sdstudio.engine.cancel import CancelToken
from sdstudio.engine.samplers import SamplerDef, SamplerOptions, ScheduleType
from sdstudio.engine.sampling import StepConditioning
from sdstudio.engine.saving import ImageSaver
from sdstudio.engine.scripting import JobHooks, NoHooks, StableDiffusionProcessing


class ConditioningEncoder(Protocol):
    """Turns prompts into step conditioning (implemented over the prompt layer)."""

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """The text encoders it runs, in order (SDXL: CLIP-L then bigG); what a LoRA patches."""
        ...

    def encode(
        self,
        prompts: list[str],
        negative_prompts: list[str],
        steps: int,
        clip_skip: int,
        width: int,
        height: int,
        check_cancelled: Callable[[], None] | None = None,
    ) -> StepConditioning:
        """The batch's conditioning; `check_cancelled` (when given) is called between encodings and raises to stop."""
        ...

    def clear_cache(self) -> None:
        """Forget cached encodings (the text encoders' weights changed, e.g. a LoRA was applied)."""
        ...


@dataclass
class GenerationModel:
    """A loaded checkpoint as processing uses it."""

    unet: Any
    vae: Any
    encoder: ConditioningEncoder
    scheduler_config: dict[str, Any]
    prediction_type: str = "epsilon"
    vae_scaling_factor: float = 0.18215
    vae_shift_factor: float = 0.0
    family: str = "sd1"
    name: str = ""
    short_hash: str = ""
    vae_name: str = ""  # an external VAE's file name (sd_vae), "" = the checkpoint's own
    vae_hash: str = ""
    execution_device: torch.device | None = None  # where the model runs (its weights may wait on the CPU: offload)

    @property
    def device(self) -> torch.device:
        if self.execution_device is not None:
            return self.execution_device
        parameter: torch.nn.Parameter = next(self.unet.parameters())
        return parameter.device

    @property
    def title(self) -> str:
        """A1111's short title, "name [short hash]" (how infotexts name a refiner or hires checkpoint)."""
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def latent_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def has_standard_latents(self) -> bool:
        """SD's 4-channel f=8 latent space, where A1111's cheap RGB approximation applies."""
        return self.latent_channels == 4 and self.latent_factor == 8

    @property
    def is_inpainting(self) -> bool:
        return int(self.unet.config.in_channels) == self.latent_channels * 2 + 1

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[-1, 1] pixels -> model-space latents (distribution mean: deterministic)."""
        vae_dtype = next(self.vae.parameters()).dtype
        posterior = self.vae.encode(pixels.to(self.device, vae_dtype)).latent_dist
        mean: torch.Tensor = posterior.mean
        return (mean.float() - self.vae_shift_factor) * self.vae_scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents -> [-1, 1] pixels."""
        vae_dtype = next(self.vae.parameters()).dtype
        scaled = latents / self.vae_scaling_factor + self.vae_shift_factor
        pixels: torch.Tensor = self.vae.decode(scaled.to(self.device, vae_dtype)).sample
        return pixels.float()


@dataclass
class ProgressEvent:
    """One progress report: which image batch, which step, time left, maybe a preview."""

    job_no: int
    job_count: int
    step: int
    steps: int
    eta_seconds: float | None
    preview: Image.Image | None = None
    textinfo: str = ""


class BatchHook(Protocol):
    """An extra network around one batch's sampling (e.g. LoRA's `<lora:...>` tags): patch on enter, unpatch on exit.

    Called with the model and the batch's prompts; the context manager may yield a dict of
    infotext parameters to add (e.g. {"Lora hashes": ...}) or None; a `.warnings` list on
    it goes into the result's warnings. A request with `disable_extra_networks` runs without any.
    """

    def __call__(
        self, model: GenerationModel, prompts: list[str], negative_prompts: list[str]
    ) -> AbstractContextManager[dict[str, Any] | None]: ...


ImageUpscaler = Callable[[Image.Image, str, int, int], Image.Image]
"""`upscale(image, upscaler_name, width, height) -> image` for hires fix with a model upscaler."""


@dataclass
class JobContext:
    """The narrow context a job runs in (no globals): model, settings, output, controls."""

    model: GenerationModel
    settings: Settings
    saver: ImageSaver
    kind: str  # "txt2img" or "img2img"
    cancel: CancelToken = field(default_factory=CancelToken)
    on_progress: Callable[[ProgressEvent], None] | None = None
    preview_every: int = 0  # 0 = no previews
    upscale_image: ImageUpscaler | None = None
    upscaler_names: Callable[[], list[str]] | None = None  # what upscale_image knows, to check hr_upscaler early
    restore_faces: Callable[[Image.Image, Settings], Image.Image] | None = None  # with the job's settings
    batch_hooks: list[BatchHook] = field(default_factory=list)
    load_checkpoint: Callable[[str], GenerationModel] | None = None  # another checkpoint by name (the refiner)
    watermark: Callable[[Image.Image], Image.Image] | None = None  # used when settings.enable_invisible_watermark
    version: str = ""
    clock: Callable[[], float] = time.monotonic
    p: StableDiffusionProcessing | None = None  # the scripts' view of the job; None: no scripts run
    hooks: JobHooks = field(default_factory=NoHooks)  # the scripts' and callbacks' hook points


@dataclass
class Plan:
    """Everything decided before the first UNet call."""

    sampler: SamplerDef
    schedule: ScheduleType
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]
    settings: Settings
    clip_skip: int
    options: SamplerOptions
    initial_noise_multiplier: float = 1.0  # img2img's noise scale (A1111 "Noise multiplier")
    warnings: list[str] = field(default_factory=list)
