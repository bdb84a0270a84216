"""Processing: a validated request in, images out, in numbered steps.

    1. check inputs        resolve sampler/schedule, per-job settings, seeds, prompts
    2. prepare init images  (img2img) resize, mask blur, "only masked" crop, fill, encode
    3. per batch:
       3a. encode prompt    conditioning with schedules and AND (the prompt layer's encoder)
       3b. prepare latents  per-image CPU noise (seeds.ImageNoise)
       3c. denoise loop     sampling.run_sampler, progress and previews each step
       3d. hires fix        upscale (latent or pixels), second pass
       3e. decode           VAE decode, paste over the original for inpainting
       3f. save             files + infotext
    4. grid

Follows A1111's modules/processing.py (process_images_inner, Txt2Img.sample,
Img2Img.init/sample), without its globals: everything comes in through `JobContext`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from sdstudio.config import Settings
from sdstudio.engine import images as imaging
from sdstudio.engine.infotext import format_infotext
from sdstudio.engine.previews import cheap_preview
from sdstudio.engine.request import HIRES_LATENT_UPSCALERS, GenerationResult, Img2ImgRequest, Txt2ImgRequest
from sdstudio.engine.samplers import (
    DiscreteSigmas,
    SamplerDef,
    SamplerOptions,
    ScheduleType,
    StepInfo,
    infotext_schedule_label,
    resolve_sampler_and_schedule,
)
from sdstudio.engine.sampling import (
    GuidedUNet,
    InpaintBlend,
    LoopControl,
    SamplingInterrupted,
    SamplingJob,
    SamplingSkipped,
    StepConditioning,
    img2img_steps,
    planned_steps,
    run_sampler,
)
from sdstudio.engine.saving import ImageSaver, image_grid
from sdstudio.engine.seeds import ImageNoise, fixed_seed, image_seeds
from sdstudio.errors import InvalidRequest, NotFound, SdStudioError

# --------------------------------------------------------------------------------------
# What processing needs from the outside
# --------------------------------------------------------------------------------------


class ConditioningEncoder(Protocol):
    """Turns prompts into step conditioning (implemented over the prompt layer)."""

    def encode(self, prompts: list[str], negative_prompts: list[str], steps: int, clip_skip: int, width: int, height: int) -> StepConditioning: ...


@dataclass
class GenerationModel:
    """A loaded checkpoint as processing uses it."""

    unet: Any
    vae: Any
    encoder: ConditioningEncoder
    scheduler_config: dict
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
        return next(self.unet.parameters()).device

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

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
        return ((posterior.mean.float() - self.vae_shift_factor) * self.vae_scaling_factor)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents -> [-1, 1] pixels."""
        vae_dtype = next(self.vae.parameters()).dtype
        scaled = latents / self.vae_scaling_factor + self.vae_shift_factor
        return self.vae.decode(scaled.to(self.device, vae_dtype)).sample.float()


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
    """Wraps one batch's sampling (e.g. LoRA from `<lora:...>` tags): patch on enter, unpatch on exit.

    Called with the model and the batch's prompts; the context manager may yield a dict of
    infotext parameters to add (e.g. {"Lora hashes": ...}) or None; a `.warnings` list on
    it goes into the result's warnings.
    """

    def __call__(self, model: "GenerationModel", prompts: list[str], negative_prompts: list[str]) -> AbstractContextManager[dict[str, Any] | None]: ...


ImageUpscaler = Callable[[Image.Image, str, int, int], Image.Image]
"""`upscale(image, upscaler_name, width, height) -> image` for hires fix with a model upscaler."""


@dataclass
class JobContext:
    """The narrow context a job runs in (no globals): model, settings, output, controls."""

    model: GenerationModel
    settings: Settings
    saver: ImageSaver
    kind: str  # "txt2img" or "img2img"
    is_interrupted: Callable[[], bool] = lambda: False
    is_skipped: Callable[[], bool] = lambda: False
    clear_skip: Callable[[], None] = lambda: None
    on_progress: Callable[[ProgressEvent], None] | None = None
    preview_every: int = 0  # 0 = no previews
    upscale_image: ImageUpscaler | None = None
    restore_faces: Callable[[Image.Image], Image.Image] | None = None
    batch_hooks: list["BatchHook"] = field(default_factory=list)
    watermark: Callable[[Image.Image], Image.Image] | None = None  # used when settings.enable_invisible_watermark
    version: str = ""
    clock: Callable[[], float] = time.monotonic


# --------------------------------------------------------------------------------------
# Step 1: check inputs
# --------------------------------------------------------------------------------------


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
    warnings: list[str] = field(default_factory=list)


def job_settings(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """A copy of the settings with the request's override_settings applied (validated)."""
    if not overrides:
        return settings
    merged = settings.model_dump()
    merged.update(overrides)
    try:
        return Settings.model_validate(merged)
    except Exception as exc:  # pydantic ValidationError: name the option
        first = getattr(exc, "errors", lambda: [{"loc": ("?",), "msg": str(exc)}])()[0]
        raise InvalidRequest("override_settings", f"option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def plan_job(request: Txt2ImgRequest | Img2ImgRequest, settings: Settings, apply_styles: Callable[[str, str, list[str]], tuple[str, str]] | None = None) -> Plan:
    """Step 1: resolve sampler, settings, seeds and the per-image prompts."""
    resolved = resolve_sampler_and_schedule(request.sampler_name, request.scheduler)
    assert resolved is not None  # the request validated it
    sampler, schedule = resolved
    js = job_settings(settings, request.override_settings)
    total = request.total_images
    seed = fixed_seed(request.seed)
    subseed = fixed_seed(request.subseed)
    seeds, subseeds = image_seeds(seed, subseed, request.subseed_strength, total)
    prompt, negative = request.prompt, request.negative_prompt
    warnings: list[str] = []
    if request.styles:
        if apply_styles is None:
            warnings.append("styles were given but no style database is configured; ignored")
        else:
            prompt, negative = apply_styles(prompt, negative, list(request.styles))
    eta = request.eta if request.eta is not None else (js.eta_ddim if sampler.name == "DDIM" else js.eta_ancestral)
    options = SamplerOptions(
        eta=eta,
        s_churn=request.s_churn if request.s_churn is not None else js.s_churn,
        s_tmin=request.s_tmin if request.s_tmin is not None else js.s_tmin,
        s_tmax=request.s_tmax if request.s_tmax is not None else js.s_tmax,
        s_noise=request.s_noise if request.s_noise is not None else js.s_noise,
    )
    return Plan(
        sampler=sampler,
        schedule=schedule,
        seeds=seeds,
        subseeds=subseeds,
        prompts=[prompt] * total,
        negative_prompts=[negative] * total,
        settings=js,
        clip_skip=int(js.CLIP_stop_at_last_layers),
        options=options,
        warnings=warnings,
    )


# --------------------------------------------------------------------------------------
# Step 2: init images and masks (img2img)
# --------------------------------------------------------------------------------------


@dataclass
class InitImages:
    """Prepared img2img inputs for the whole job."""

    images: list[Image.Image]  # resized / cropped to width x height (resize mode 3: kept at their own size)
    latent_mask: Image.Image | None = None  # white = repaint, at width x height
    overlays: list[Image.Image] = field(default_factory=list)
    paste_to: tuple[int, int, int, int] | None = None


def prepare_init_images(request: Img2ImgRequest) -> InitImages:
    """Step 2: resize the init images, blur and crop the mask, fill masked content (A1111 Img2Img.init)."""
    width, height = request.width, request.height
    image_mask = request.mask
    crop = None
    paste_to = None
    mask_for_overlay = None
    if image_mask is not None:
        image_mask = image_mask.convert("L")
        if request.inpainting_mask_invert:
            image_mask = ImageOps.invert(image_mask)
        if request.mask_blur_x > 0 or request.mask_blur_y > 0:
            image_mask = imaging.blur_mask(image_mask, request.mask_blur_x, request.mask_blur_y)
        if request.inpaint_full_res:
            mask_for_overlay = image_mask
            region = imaging.crop_region(image_mask, request.inpaint_full_res_padding)
            if region is None:
                raise InvalidRequest("mask", "the mask is empty: paint the area to change in white")
            crop = imaging.expand_crop_region(region, width, height, image_mask.width, image_mask.height)
            x1, y1, x2, y2 = crop
            image_mask = imaging.resize_image(2, image_mask.crop(crop), width, height)
            paste_to = (x1, y1, x2 - x1, y2 - y1)
        else:
            image_mask = imaging.resize_image(request.resize_mode, image_mask, width, height)
            array = (torch.tensor(list(image_mask.getdata()), dtype=torch.float32) * 2).clamp(0, 255)
            mask_for_overlay = Image.new("L", image_mask.size)
            mask_for_overlay.putdata([int(v) for v in array.tolist()])
    # Resize mode 3 ("Just resize (latent upscale)"): the image is encoded at its own size and
    # the latent is resized (sample_batch). With a mask the overlay must match the output, so
    # a masked request resizes the image instead, as mode 0.
    latent_resize = request.resize_mode == 3 and image_mask is None
    prepared, overlays = [], []
    for source in request.init_images:
        image = ImageOps.exif_transpose(source).convert("RGB")
        if latent_resize:
            own = prepared[0].size if prepared else (max(8, image.width // 8 * 8), max(8, image.height // 8 * 8))
            image = imaging.resize_image(0, image, *own) if image.size != own else image
        elif crop is None:
            image = imaging.resize_image(request.resize_mode, image, width, height)
        if image_mask is not None:
            masked = Image.new("RGBa", image.size)
            masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
            overlays.append(masked.convert("RGBA"))
        if crop is not None:
            image = imaging.resize_image(2, image.crop(crop), width, height)
        if image_mask is not None and request.inpainting_fill == 0:
            image = imaging.fill_masked(image, image_mask)
        prepared.append(image)
    return InitImages(images=prepared, latent_mask=image_mask, overlays=overlays, paste_to=paste_to)


def _batch_of(items: list, start: int, count: int) -> list:
    """Items for one batch; a single item is repeated (A1111 uses one init image for all)."""
    if len(items) == 1:
        return items * count
    return [items[(start + i) % len(items)] for i in range(count)]


def latent_masks(mask_image: Image.Image, latent_shape: tuple[int, int], round_mask: bool, channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep mask, repaint mask) at latent size (A1111: mask = 1 - latmask, nmask = latmask)."""
    h, w = latent_shape
    latmask = torch.tensor(list(mask_image.convert("L").resize((w, h), Image.BICUBIC).getdata()), dtype=torch.float32).view(1, 1, h, w) / 255
    if round_mask:
        latmask = latmask.round()
    latmask = latmask.expand(1, channels, h, w).to(device)
    return 1.0 - latmask, latmask


def inpainting_image_conditioning(model: GenerationModel, pixels: torch.Tensor | None, mask: torch.Tensor | None, batch: int, latent_hw: tuple[int, int]) -> torch.Tensor:
    """The 5 extra channels of an inpainting UNet: mask + latent of the masked image (A1111)."""
    h, w = latent_hw
    f = model.latent_factor
    if pixels is None:  # txt2img on an inpainting model: everything is to be painted
        pixels = torch.zeros(batch, 3, h * f, w * f)
        mask = torch.ones(batch, 1, h * f, w * f)
    cond_mask = mask.round()
    masked = pixels * (1.0 - cond_mask)
    latent = model.encode_images(masked)
    mask_latent = F.interpolate(cond_mask.to(latent), size=(h, w))
    return torch.cat([mask_latent, latent], dim=1)


# --------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------


class Progress:
    """Turns sampler callbacks into ProgressEvents with ETA and previews."""

    def __init__(self, ctx: JobContext, job_count: int, steps_per_job: int):
        self.ctx = ctx
        self.job_count = job_count
        self.steps_per_job = max(1, steps_per_job)
        self.started = ctx.clock()
        self.done_steps = 0
        self.job_no = 0
        self.steps = self.steps_per_job

    def begin(self, job_no: int, steps: int) -> None:
        self.job_no = job_no
        self.steps = max(1, steps)

    def __call__(self, info: StepInfo) -> None:
        self.done_steps += 1
        if self.ctx.on_progress is None:
            return
        elapsed = self.ctx.clock() - self.started
        total = self.job_count * self.steps_per_job
        remaining = max(total - self.done_steps, 0)
        eta = elapsed / self.done_steps * remaining if self.done_steps else None
        preview = None
        every = self.ctx.preview_every
        if every > 0 and (info.step + 1) % every == 0:
            model = self.ctx.model
            if model.has_standard_latents:
                preview = cheap_preview(info.denoised, model.family)
            else:  # no known linear map for this VAE: decode the first image (small models only)
                preview = imaging.tensor_to_pil(model.decode_latents(info.denoised[:1]))[0]
        textinfo = f"Batch {self.job_no + 1} out of {self.job_count}" if self.job_count > 1 else ""  # A1111 state.job
        self.ctx.on_progress(ProgressEvent(self.job_no, self.job_count, min(info.step + 1, self.steps), self.steps, eta, preview, textinfo))


def generation_parameters(request, plan: Plan, index: int, ctx: JobContext, extra: dict[str, Any]) -> dict[str, Any]:
    """The infotext parameters of image `index`, in A1111's order (create_infotext)."""
    s = plan.settings
    sampler = plan.sampler
    default_eta = sampler.default_eta
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": sampler.name,
        "Schedule type": infotext_schedule_label(sampler, plan.schedule),
        "CFG scale": request.cfg_scale,
        "Seed": plan.seeds[index],
        "Face restoration": s.face_restoration_model if request.restore_faces else None,
        "Size": f"{request.width}x{request.height}",
        "Model hash": ctx.model.short_hash or None,
        "Model": ctx.model.name or None,
        "VAE hash": ctx.model.vae_hash or None,
        "VAE": ctx.model.vae_name or None,
        "Variation seed": None if request.subseed_strength == 0 else plan.subseeds[index],
        "Variation seed strength": None if request.subseed_strength == 0 else request.subseed_strength,
        "Seed resize from": None if request.seed_resize_from_w <= 0 or request.seed_resize_from_h <= 0 else f"{request.seed_resize_from_w}x{request.seed_resize_from_h}",
        "Denoising strength": None,
        "Conditional mask weight": 1.0 if ctx.model.is_inpainting else None,
        "Clip skip": None if plan.clip_skip <= 1 else plan.clip_skip,
        "ENSD": s.eta_noise_seed_delta if (s.eta_noise_seed_delta and sampler.uses_noise) else None,
        "RNG": s.randn_source if s.randn_source != "GPU" else None,
        "Tiling": "True" if request.tiling else None,
        # A1111's samplers add "Eta" to extra_generation_params when it is not their default.
        "Eta": plan.options.eta if sampler.uses_eta and plan.options.eta != default_eta else None,
    }
    params.update(extra)
    params["Version"] = ctx.version or None
    return params


def _extra_params(request, plan: Plan) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if isinstance(request, Txt2ImgRequest) and request.enable_hr:
        extra["Denoising strength"] = request.denoising_strength
        if request.hr_resize_x or request.hr_resize_y:
            extra["Hires resize"] = f"{request.hr_resize_x}x{request.hr_resize_y}"
        else:
            extra["Hires upscale"] = request.hr_scale
        if request.hr_second_pass_steps:
            extra["Hires steps"] = request.hr_second_pass_steps
        extra["Hires upscaler"] = request.hr_upscaler
        if request.hr_sampler_name and request.hr_sampler_name != "Use same sampler":
            extra["Hires sampler"] = request.hr_sampler_name
        if request.hr_prompt and request.hr_prompt != request.prompt:
            extra["Hires prompt"] = request.hr_prompt
        if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
            extra["Hires negative prompt"] = request.hr_negative_prompt
    if isinstance(request, Img2ImgRequest):
        extra["Denoising strength"] = request.denoising_strength
        if request.mask is not None:
            extra["Mask blur"] = request.mask_blur_x if request.mask_blur_x == request.mask_blur_y else None
            extra["Mask blur x"] = request.mask_blur_x if request.mask_blur_x != request.mask_blur_y else None
            extra["Mask blur y"] = request.mask_blur_y if request.mask_blur_x != request.mask_blur_y else None
            if request.inpaint_full_res:
                extra["Inpaint area"] = "Only masked"
                extra["Masked area padding"] = request.inpaint_full_res_padding
            extra["Masked content"] = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}[request.inpainting_fill]
    return extra


class _Tiling:
    """Circular padding on every conv while active (A1111 'Tiling'); always restored."""

    def __init__(self, modules: list, enabled: bool):
        self.convs = [m for mod in modules for m in mod.modules() if isinstance(m, torch.nn.Conv2d)] if enabled else []
        self.saved: list[str] = []

    def __enter__(self):
        self.saved = [c.padding_mode for c in self.convs]
        for c in self.convs:
            c.padding_mode = "circular"
        return self

    def __exit__(self, *exc):
        for c, mode in zip(self.convs, self.saved):
            c.padding_mode = mode
        return False


def run_generation(request: Txt2ImgRequest | Img2ImgRequest, ctx: JobContext, apply_styles=None) -> GenerationResult:
    """Run a txt2img or img2img job from start to finish (steps 1-4 of the module docstring)."""
    model = ctx.model
    # Step 1: check inputs
    plan = plan_job(request, ctx.settings, apply_styles)
    result = GenerationResult(warnings=list(plan.warnings))
    is_img2img = isinstance(request, Img2ImgRequest)
    if request.restore_faces and ctx.restore_faces is None:
        result.warnings.append("face restoration is not available; images are saved without it")
    hires = isinstance(request, Txt2ImgRequest) and request.enable_hr
    if hires and request.hr_upscaler not in HIRES_LATENT_UPSCALERS and request.hr_upscaler not in ("None", "Lanczos", "Nearest") and ctx.upscale_image is None:
        raise NotFound(f"hr_upscaler: upscaler {request.hr_upscaler!r} is not available; use Latent, Lanczos or Nearest")
    f = model.latent_factor
    if request.width % f or request.height % f:
        raise InvalidRequest("width", f"width and height must be multiples of {f} for this model")
    # Step 2: init images
    init = prepare_init_images(request) if is_img2img else None

    first_pass_steps = planned_steps_for(request, plan)
    hires_steps = (request.hr_second_pass_steps or request.steps) if hires else 0
    progress = Progress(ctx, request.n_iter, first_pass_steps + hires_steps)
    discrete = DiscreteSigmas.from_scheduler_config(model.scheduler_config)
    extra = _extra_params(request, plan)
    outdir = ctx.saver.output_folder(ctx.kind, override=request.outpath_samples)
    batch_size = request.batch_size

    with torch.no_grad(), _Tiling([model.unet, model.vae], request.tiling):
        for n in range(request.n_iter):
            if ctx.is_interrupted():
                result.interrupted = True
                break
            ctx.clear_skip()
            start = n * batch_size
            seeds = plan.seeds[start : start + batch_size]
            subseeds = plan.subseeds[start : start + batch_size]
            prompts = plan.prompts[start : start + batch_size]
            negatives = plan.negative_prompts[start : start + batch_size]
            progress.begin(n, first_pass_steps)
            batch = Batch(n, start, seeds, subseeds, prompts, negatives)
            with ExitStack() as hooks:
                batch_extra = dict(extra)
                for hook in ctx.batch_hooks:
                    added = hooks.enter_context(hook(model, prompts, negatives))
                    batch_extra.update(added or {})
                    for warning in getattr(added, "warnings", None) or []:
                        if warning not in result.warnings:
                            result.warnings.append(warning)
                samples = sample_batch(request, plan, ctx, init, batch, discrete, progress, result)
                # Step 3e: decode
                decoded = imaging.tensor_to_pil(model.decode_latents(samples))
            # Step 3f: save
            save_batch(request, plan, ctx, init, batch, decoded, batch_extra, outdir, result)
            if result.interrupted:
                break

    # Step 4: grid
    if len(result.images) > 1 and not request.do_not_save_grid:
        grid = image_grid(result.images, n_rows=int(getattr(plan.settings, "n_rows", -1)), batch_size=batch_size)
        grid_infotext = result.infotexts[0] if result.infotexts else None
        if plan.settings.grid_save:
            grid_dir = ctx.saver.output_folder(ctx.kind, grid=True, override=request.outpath_grids)
            result.grid_path = ctx.saver.save_grid(grid, grid_dir, grid_infotext)
        if plan.settings.return_grid:
            result.images.insert(0, grid)
            result.grid_infotext = grid_infotext
            result.index_of_first_image = 1
    result.info = _info_dict(request, plan, result, ctx)
    return result


def planned_steps_for(request, plan: Plan) -> int:
    """Sampler steps the first pass reports (img2img runs int(strength * steps))."""
    if isinstance(request, Img2ImgRequest):
        return img2img_steps(request.steps, request.denoising_strength)[1]
    return request.steps


@dataclass
class Batch:
    """One batch of a job: its index, first image index, seeds and prompts."""

    number: int
    start: int
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]


def sample_batch(request, plan: Plan, ctx: JobContext, init: InitImages | None, batch: Batch, discrete: DiscreteSigmas, progress: Progress, result: GenerationResult) -> torch.Tensor:
    """Steps 3a-3d for one batch: encode prompt, prepare latents, denoise, hires fix."""
    model = ctx.model
    f = model.latent_factor
    batch_size = len(batch.seeds)
    latent_hw = (request.height // f, request.width // f)
    # Step 3a: encode prompt
    conditioning = model.encoder.encode(batch.prompts, batch.negative_prompts, plan.sampler.total_model_evaluations(request.steps), plan.clip_skip, request.width, request.height)
    # Step 3b: prepare latents
    noise = ImageNoise(
        (model.latent_channels, *latent_hw), batch.seeds, batch.subseeds, request.subseed_strength,
        request.seed_resize_from_h, request.seed_resize_from_w, plan.settings.eta_noise_seed_delta,
        latent_factor=f, device=model.device,
    )
    initial = noise.first()
    init_latent = blend = image_conditioning = None
    if init is not None:
        pixels = imaging.pil_to_tensor(_batch_of(init.images, batch.start, batch_size))
        init_latent = model.encode_images(pixels)
        if init_latent.shape[-2:] != latent_hw:  # resize mode 3: upscale in latent space (A1111: bilinear)
            init_latent = F.interpolate(init_latent, size=latent_hw, mode="bilinear", align_corners=False)
            pixels = F.interpolate(pixels, size=(request.height, request.width), mode="bilinear", align_corners=False)
        if init.latent_mask is not None:
            keep, repaint = latent_masks(init.latent_mask, latent_hw, request.mask_round, model.latent_channels, model.device)
            if request.inpainting_fill == 2:  # latent noise
                init_latent = init_latent * keep + initial.clone() * repaint
            elif request.inpainting_fill == 3:  # latent nothing
                init_latent = init_latent * keep
            blend = InpaintBlend(init_latent, keep, repaint)
        if model.is_inpainting:
            if init.latent_mask is not None:
                mask_px = imaging.pil_to_tensor([init.latent_mask.convert("RGB")])[:, :1].add(1).div(2).expand(batch_size, 1, -1, -1)
            else:
                mask_px = torch.ones(batch_size, 1, pixels.shape[2], pixels.shape[3])
            image_conditioning = inpainting_image_conditioning(model, pixels, mask_px, batch_size, latent_hw)
    elif model.is_inpainting:
        image_conditioning = inpainting_image_conditioning(model, None, None, batch_size, latent_hw)
    guided = GuidedUNet(model.unet, conditioning, request.cfg_scale, image_conditioning, getattr(conditioning, "unet_kwargs", None))
    job = SamplingJob(
        sampler=plan.sampler, schedule=plan.schedule, steps=request.steps, guided=guided, discrete=discrete,
        prediction_type=model.prediction_type, scheduler_config=model.scheduler_config, noise=noise.next,
        initial_noise=initial, options=plan.options, init_latent=init_latent,
        denoising_strength=request.denoising_strength,
        initial_noise_multiplier=(request.initial_noise_multiplier or 1.0) if init is not None else 1.0,
        blend=blend, control=LoopControl(ctx.is_interrupted, ctx.is_skipped), callback=progress,
    )
    # Step 3c: denoise loop
    try:
        samples = run_sampler(job)
    except SamplingInterrupted as stop:
        # A1111 keeps the image as far as it got (the last x0 prediction).
        if not isinstance(stop, SamplingSkipped):
            result.interrupted = True
        samples = stop.latest if stop.latest is not None else initial
        return blend.apply(samples) if blend is not None else samples
    if blend is not None:
        samples = blend.apply(samples)
    # Step 3d: hires fix
    if isinstance(request, Txt2ImgRequest) and request.enable_hr:
        try:
            samples = hires_pass(request, plan, ctx, samples, batch.seeds, batch.subseeds, batch.prompts, batch.negative_prompts, discrete, progress)
        except SamplingInterrupted as stop:
            if not isinstance(stop, SamplingSkipped):
                result.interrupted = True
            samples = stop.latest if stop.latest is not None else samples
    return samples


def save_batch(request, plan: Plan, ctx: JobContext, init: InitImages | None, batch: Batch, decoded: list[Image.Image], extra: dict[str, Any], outdir, result: GenerationResult) -> None:
    """Step 3f: face restoration, paste-back for inpainting, infotext, files, result lists."""
    for i, image in enumerate(decoded):
        index = batch.start + i
        if request.restore_faces and ctx.restore_faces is not None:
            try:
                image = ctx.restore_faces(image)
            except SdStudioError as exc:  # a missing face model must not lose the image
                if f"face restoration skipped: {exc}" not in result.warnings:
                    result.warnings.append(f"face restoration skipped: {exc}")
        if init is not None and init.overlays:
            image = imaging.apply_overlay(image, init.paste_to, _batch_of(init.overlays, batch.start, len(decoded))[i])
        if plan.settings.enable_invisible_watermark and ctx.watermark is not None:
            try:
                image = ctx.watermark(image)  # CompVis put_watermark, before saving
            except SdStudioError as exc:  # e.g. too small for DWT-DCT: keep the image, say so
                if f"watermark skipped: {exc}" not in result.warnings:
                    result.warnings.append(f"watermark skipped: {exc}")
        infotext = format_infotext(plan.prompts[index], plan.negative_prompts[index], generation_parameters(request, plan, index, ctx, extra))
        if plan.settings.samples_save and not request.do_not_save_samples:
            result.saved_paths.append(ctx.saver.save_image(image, outdir, plan.seeds[index], plan.prompts[index], infotext))
        if plan.settings.enable_pnginfo:
            image.info["parameters"] = infotext  # A1111: the returned image carries its infotext
        result.images.append(image)
        result.infotexts.append(infotext)
        result.seeds.append(plan.seeds[index])
        result.subseeds.append(plan.subseeds[index])
        result.prompts.append(plan.prompts[index])
        result.negative_prompts.append(plan.negative_prompts[index])


def hires_pass(request: Txt2ImgRequest, plan: Plan, ctx: JobContext, samples: torch.Tensor, seeds, subseeds, prompts, negatives, discrete: DiscreteSigmas, progress: Progress) -> torch.Tensor:
    """Step 3d: upscale the first pass and denoise it again (A1111 Txt2Img.sample_hr_pass)."""
    model = ctx.model
    f = model.latent_factor
    target_w, target_h = request.hires_size()
    if request.hr_upscaler in HIRES_LATENT_UPSCALERS:
        mode, antialias = HIRES_LATENT_UPSCALERS[request.hr_upscaler]
        samples = F.interpolate(samples, size=(target_h // f, target_w // f), mode=mode, antialias=antialias if mode in ("bilinear", "bicubic") else False)
    else:
        upscaled = []
        for image in imaging.tensor_to_pil(model.decode_latents(samples)):
            if request.hr_upscaler in ("None", "Lanczos"):
                image = image.resize((target_w, target_h), Image.LANCZOS)
            elif request.hr_upscaler == "Nearest":
                image = image.resize((target_w, target_h), Image.NEAREST)
            else:
                image = ctx.upscale_image(image, request.hr_upscaler, target_w, target_h)
                if image.size != (target_w, target_h):
                    image = imaging.resize_image(1, image, target_w, target_h)
            upscaled.append(image)
        samples = model.encode_images(imaging.pil_to_tensor(upscaled))
    sampler, schedule = plan.sampler, plan.schedule
    if request.hr_sampler_name and request.hr_sampler_name != "Use same sampler":
        scheduler_name = request.hr_scheduler if request.hr_scheduler not in (None, "Use same scheduler") else plan.schedule.label
        sampler, schedule = resolve_sampler_and_schedule(request.hr_sampler_name, scheduler_name)
    steps = request.hr_second_pass_steps or request.steps
    hr_prompts = [request.hr_prompt] * len(prompts) if request.hr_prompt else prompts
    hr_negatives = [request.hr_negative_prompt] * len(negatives) if request.hr_negative_prompt else negatives
    conditioning = model.encoder.encode(hr_prompts, hr_negatives, sampler.total_model_evaluations(steps), plan.clip_skip, target_w, target_h)
    latent_hw = (target_h // f, target_w // f)
    noise = ImageNoise((model.latent_channels, *latent_hw), seeds, subseeds, request.subseed_strength, request.seed_resize_from_h, request.seed_resize_from_w, plan.settings.eta_noise_seed_delta, latent_factor=f, device=model.device)
    image_conditioning = None
    if model.is_inpainting:
        image_conditioning = inpainting_image_conditioning(model, None, None, samples.shape[0], latent_hw)
    guided = GuidedUNet(model.unet, conditioning, request.hr_cfg if request.hr_cfg is not None else request.cfg_scale, image_conditioning, getattr(conditioning, "unet_kwargs", None))
    job = SamplingJob(
        sampler=sampler, schedule=schedule, steps=steps, guided=guided, discrete=discrete,
        prediction_type=model.prediction_type, scheduler_config=model.scheduler_config, noise=noise.next,
        initial_noise=noise.first(), options=plan.options, init_latent=samples,
        denoising_strength=request.denoising_strength, requested_steps=steps,
        control=LoopControl(ctx.is_interrupted, ctx.is_skipped), callback=progress,
    )
    progress.begin(progress.job_no, planned_steps(job))
    return run_sampler(job)


def _info_dict(request, plan: Plan, result: GenerationResult, ctx: JobContext) -> dict[str, Any]:
    """A1111's Processed.js() fields."""
    return {
        "prompt": plan.prompts[0] if plan.prompts else request.prompt,
        "all_prompts": result.prompts,
        "negative_prompt": plan.negative_prompts[0] if plan.negative_prompts else request.negative_prompt,
        "all_negative_prompts": result.negative_prompts,
        "seed": plan.seeds[0],
        "all_seeds": result.seeds,
        "subseed": plan.subseeds[0],
        "all_subseeds": result.subseeds,
        "subseed_strength": request.subseed_strength,
        "width": request.width,
        "height": request.height,
        "sampler_name": plan.sampler.name,
        "scheduler": plan.schedule.label,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": request.restore_faces,
        "sd_model_name": ctx.model.name,
        "sd_model_hash": ctx.model.short_hash,
        "seed_resize_from_w": request.seed_resize_from_w,
        "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": request.denoising_strength,
        "extra_generation_params": _extra_params(request, plan),
        "index_of_first_image": result.index_of_first_image,
        # A1111's wire format: infotexts aligned with images, the grid's first.
        "infotexts": ([result.grid_infotext or ""] if result.index_of_first_image else []) + result.infotexts,
        "styles": list(request.styles),
        "clip_skip": plan.clip_skip,
        "is_using_inpainting_conditioning": ctx.model.is_inpainting,
        "version": ctx.version,
        "interrupted": result.interrupted,
        "warnings": result.warnings,
    }
