"""Processing: a validated request in, images out, in numbered steps.

    1. check inputs        resolve sampler/schedule, per-job settings, seeds, prompts
    2. prepare init images  (img2img) resize, mask blur, "only masked" crop, fill (init_images.py)
    3. per batch (3a-3e inside the batch hooks, e.g. LoRA):
       3a. encode prompt    conditioning with schedules and AND (the prompt layer's encoder)
       3b. prepare latents  per-image CPU noise (seeds.ImageNoise); img2img: encode the init images, masks
       3c. denoise loop     sampling.run_sampler, progress and previews each step
       3d. hires fix        upscale (latent or pixels), second pass
       3e. decode           VAE decode
       3f. save             face restoration, paste over the original for inpainting, files + infotext
    4. grid
    5. info                A1111's Processed.js() fields (generation_params.py)

`GenerationJob` runs them: one method per step, `run()` calls them top to bottom; the job's
state (plan, result, init images, progress...) lives on the job, one batch's state on a `Batch`.
Follows A1111's modules/processing.py (process_images_inner, Txt2Img.sample,
Img2Img.init/sample), without its globals: everything comes in through `JobContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import torch
import torch.nn.functional as F
from PIL import Image

from sdstudio.config import Settings
from sdstudio.engine import images as imaging
from sdstudio.engine import init_images
from sdstudio.engine.generation_params import (
    extra_parameters,
    generation_parameters,
    job_info,
    textual_inversion_hashes,
)
from sdstudio.engine.infotext import format_infotext
from sdstudio.engine.job_context import GenerationModel, JobContext, Plan, ProgressEvent
from sdstudio.engine.previews import cheap_preview
from sdstudio.engine.refiner import RefinerSwitch, SwitchingGuidance
from sdstudio.engine.request import (
    HIRES_IMAGE_UPSCALERS,
    HIRES_LATENT_UPSCALERS,
    GenerationResult,
    Img2ImgRequest,
    Txt2ImgRequest,
    hires_upscaler_names,
)
from sdstudio.engine.samplers import (
    DiscreteSigmas,
    SamplerDef,
    SamplerOptions,
    StepInfo,
    resolve_sampler_and_schedule,
)
from sdstudio.engine.sampling import (
    DenoiserHooks,
    Guidance,
    GuidedUNet,
    InpaintBlend,
    SamplingInterrupted,
    SamplingJob,
    SamplingSkipped,
    StepConditioning,
    img2img_steps,
    planned_steps,
    run_sampler,
)
from sdstudio.engine.saving import image_grid
from sdstudio.engine.scripting import ImageSaveParams, PostprocessImageArgs
from sdstudio.engine.seeds import ImageNoise, fixed_seed, image_seeds
from sdstudio.engine.step_cache import step_cache
from sdstudio.engine.token_merging import merged_tokens, token_merging_ratio
from sdstudio.errors import InvalidRequest, NotFound, SdStudioError

# --------------------------------------------------------------------------------------
# Step 1: check inputs
# --------------------------------------------------------------------------------------


def plan_job(
    request: Txt2ImgRequest | Img2ImgRequest,
    settings: Settings,
    apply_styles: Callable[[str, str, list[str]], tuple[str, str]] | None = None,
) -> Plan:
    """Step 1: resolve sampler, seeds and the per-image prompts (`settings`: the job's snapshot, overrides included)."""
    resolved = resolve_sampler_and_schedule(request.sampler_name, request.scheduler)
    assert resolved is not None  # the request validated it
    sampler, schedule = resolved
    js = settings
    total = request.total_images
    seed = fixed_seed(request.seed)
    subseed = fixed_seed(request.subseed)
    seeds, subseeds = image_seeds(seed, subseed, request.subseed_strength, total)
    prompts, negatives = request.all_prompts(), request.all_negative_prompts()
    warnings: list[str] = []
    if request.styles:
        if apply_styles is None:
            warnings.append("styles were given but no style database is configured; ignored")
        else:
            pairs = list(zip(prompts, negatives))
            styled = {pair: apply_styles(*pair, list(request.styles)) for pair in set(pairs)}  # each distinct once
            prompts = [styled[pair][0] for pair in pairs]
            negatives = [styled[pair][1] for pair in pairs]
    # A1111: timestep samplers (DDIM, DDIM CFG++...) default to the eta_ddim setting, the others to eta_ancestral.
    eta = request.eta if request.eta is not None else (js.eta_ddim if sampler.is_timestep_sampler else js.eta_ancestral)
    options = SamplerOptions(
        eta=eta,
        s_churn=request.s_churn if request.s_churn is not None else js.s_churn,
        s_tmin=request.s_tmin if request.s_tmin is not None else js.s_tmin,
        s_tmax=request.s_tmax if request.s_tmax is not None else js.s_tmax,
        s_noise=request.s_noise if request.s_noise is not None else js.s_noise,
    )
    noise_multiplier = 1.0
    if isinstance(request, Img2ImgRequest):
        given = request.initial_noise_multiplier
        noise_multiplier = given if given is not None else js.initial_noise_multiplier
    return Plan(
        sampler=sampler,
        schedule=schedule,
        seeds=seeds,
        subseeds=subseeds,
        prompts=prompts,
        negative_prompts=negatives,
        settings=js,
        clip_skip=int(js.CLIP_stop_at_last_layers),
        options=options,
        initial_noise_multiplier=noise_multiplier,
        warnings=warnings,
    )


# --------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------


class Progress:
    """Turns sampler callbacks into ProgressEvents with ETA and previews."""

    def __init__(self, ctx: JobContext, job_count: int, steps_per_job: int) -> None:
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
        self.ctx.on_progress(
            ProgressEvent(
                self.job_no, self.job_count, min(info.step + 1, self.steps), self.steps, eta, preview, textinfo
            )
        )


_PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]  # torch.nn.Conv2d.padding_mode


class _Tiling:
    """Circular padding on every conv while active (A1111 'Tiling'); always restored."""

    def __init__(self, modules: list[torch.nn.Module], enabled: bool) -> None:
        self.convs = [m for mod in modules for m in mod.modules() if isinstance(m, torch.nn.Conv2d)] if enabled else []
        self.saved: list[_PaddingMode] = []

    def __enter__(self) -> Self:
        self.saved = [c.padding_mode for c in self.convs]
        for c in self.convs:
            c.padding_mode = "circular"
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        for c, mode in zip(self.convs, self.saved):
            c.padding_mode = mode
        return False


@dataclass
class Batch:
    """One batch of a job: which images it makes, and what each step hands the next."""

    number: int
    start: int  # the job's index of its first image
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # infotext parameters: the job's and the batch hooks'
    conditioning: StepConditioning | None = None  # 3a
    embedding_hashes: dict[str, str] = field(default_factory=dict)  # 3a, 3d: textual inversions used, for the infotext
    noise: ImageNoise | None = None  # 3b
    initial_noise: torch.Tensor | None = None
    init_latent: torch.Tensor | None = None  # img2img
    blend: InpaintBlend | None = None  # inpainting: puts the unmasked latent back each step
    image_conditioning: torch.Tensor | None = None  # an inpainting UNet's extra channels
    samples: torch.Tensor | None = None  # 3c, 3d: latents
    images: list[Image.Image] = field(default_factory=list)  # 3e
    hooks: ExitStack = field(default_factory=ExitStack)  # what undoes the batch hooks (the refiner's included)
    models: list[GenerationModel] = field(default_factory=list)  # the models the batch hooks were entered for

    @property
    def size(self) -> int:
        return len(self.seeds)


class GenerationJob:
    """One txt2img or img2img job: the module docstring's steps as methods, the job's state as attributes."""

    plan: Plan  # step 1 sets plan, result, hires and other_models
    result: GenerationResult
    hires: bool
    other_models: dict[str, GenerationModel]  # refiner and hires checkpoints by name, loaded when first used
    init: init_images.InitImages | None  # step 2; None for txt2img
    first_pass_steps: int  # start_batches sets the rest
    progress: Progress
    discrete: DiscreteSigmas
    extra: dict[str, Any]  # the infotext parameters every image shares
    outdir: Path

    def __init__(
        self,
        request: Txt2ImgRequest | Img2ImgRequest,
        ctx: JobContext,
        apply_styles: Callable[[str, str, list[str]], tuple[str, str]] | None = None,
    ):
        self.request = request
        self.ctx = ctx
        self.model = ctx.model
        self.apply_styles = apply_styles

    def run(self) -> GenerationResult:
        """Run the job from start to finish."""
        self.check_inputs()
        self.process_scripts()
        self.prepare_init_images()
        self.start_batches()
        with torch.no_grad(), _Tiling([self.model.unet, self.model.vae], self.request.tiling):
            for batch in self.batches():
                if self.ctx.cancel.interrupted:
                    self.result.interrupted = True
                    break
                self.ctx.cancel.clear_skip()
                self.progress.begin(batch.number, self.first_pass_steps)
                self.model = self.ctx.model  # every batch starts on the job's checkpoint (a refiner may take over)
                self.script_batch_hook(batch, "before_process_batch")
                with self.apply_batch_hooks(batch):
                    self.script_batch_hook(batch, "process_batch")
                    if not self.encode_prompt(batch):
                        break
                    self.prepare_latents(batch)
                    if self.denoise(batch) and self.hires:
                        self.hires_fix(batch)
                    self.decode(batch)
                self.save(batch)
                if self.result.interrupted:
                    break
        self.make_grid()
        self.fill_info()
        if self.ctx.p is not None:
            self.ctx.hooks.postprocess(self.ctx.p, self.result)
            self.result.warnings.extend(w for w in self.ctx.p.warnings if w not in self.result.warnings)
        return self.result

    # Step 1: check inputs

    def check_inputs(self) -> None:
        """Step 1: plan the job (sampler, settings, seeds, prompts) and refuse what this model cannot run."""
        request, ctx = self.request, self.ctx
        request.check_prompts(ctx.settings.prompt_max_length)
        self.plan = plan_job(request, ctx.settings, self.apply_styles)
        self.result = GenerationResult(warnings=list(self.plan.warnings))
        if request.restore_faces and ctx.restore_faces is None:
            self.result.warnings.append("face restoration is not available; images are saved without it")
        self.hires = isinstance(request, Txt2ImgRequest) and request.enable_hr
        if self.hires and isinstance(request, Txt2ImgRequest):
            self.check_hr_upscaler(request.hr_upscaler)
        f = self.model.latent_factor
        if request.width % f or request.height % f:
            raise InvalidRequest("width", f"width and height must be multiples of {f} for this model")
        self.other_models = {}
        for name in ("refiner_checkpoint", "hr_checkpoint_name"):
            if getattr(request, name, None) and ctx.load_checkpoint is None:
                raise InvalidRequest(name, "no other checkpoint can be loaded here")

    def check_hr_upscaler(self, name: str) -> None:
        """Refuse an unknown hr_upscaler before the first pass, naming every choice (latent modes included)."""
        if name in HIRES_LATENT_UPSCALERS or name in HIRES_IMAGE_UPSCALERS:
            return
        ctx = self.ctx
        models: list[str] = []
        if ctx.upscale_image is not None:
            if ctx.upscaler_names is None:
                return  # unchecked here: the upscaler refuses an unknown name when the second pass asks for it
            models = ctx.upscaler_names()
        if name not in models:
            choices = ", ".join(hires_upscaler_names(models))
            raise NotFound(f"hr_upscaler: unknown upscaler {name!r}; available: {choices}")

    def process_scripts(self) -> None:
        """Step 1 (scripts): p.all_prompts/all_seeds... set up, the scripts' `process` run, their changes taken.

        A script may change any request field of `p` or the per-image lists (A1111 scripts such
        as wildcards rewrite `p.all_prompts`); the job is planned again from what they left.
        """
        p = self.ctx.p
        if p is None:
            return
        plan = self.plan
        p.sd_model = self.model
        p.all_prompts, p.all_negative_prompts = list(plan.prompts), list(plan.negative_prompts)
        p.all_seeds, p.all_subseeds = p.per_image_seeds(plan.seeds, plan.subseeds)
        self.ctx.hooks.process(p)
        if p.request_fields() != dict(self.request):
            self.request = p.to_request()
            self.check_inputs()
        total = self.request.total_images
        lists: dict[str, list[Any]] = {
            "all_prompts": p.all_prompts,
            "all_negative_prompts": p.all_negative_prompts,
            "all_seeds": p.all_seeds,
            "all_subseeds": p.all_subseeds,
        }
        for name, values in lists.items():
            if len(values) != total:
                raise InvalidRequest(name, f"a script left {len(values)} values for the job's {total} images")
        self.plan.prompts = [str(text) for text in p.all_prompts]
        self.plan.negative_prompts = [str(text) for text in p.all_negative_prompts]
        self.plan.seeds = [int(seed) for seed in p.all_seeds]
        self.plan.subseeds = [int(seed) for seed in p.all_subseeds]

    def script_batch_hook(self, batch: Batch, hook: Literal["before_process_batch", "process_batch"]) -> None:
        """A1111's before_process_batch / process_batch: p.prompts, p.seeds... are the batch's; prompts may change."""
        p = self.ctx.p
        if p is None:
            return
        p.iteration, p.sd_model = batch.number, self.model
        p.prompts, p.negative_prompts = batch.prompts, batch.negative_prompts
        p.seeds, p.subseeds = batch.seeds, batch.subseeds
        getattr(self.ctx.hooks, hook)(
            p, batch_number=batch.number, prompts=batch.prompts, seeds=batch.seeds, subseeds=batch.subseeds
        )
        batch.extra.update(p.extra_generation_params)

    # Step 2: init images

    def prepare_init_images(self) -> None:
        """Step 2 (img2img): resize, mask blur, "only masked" crop, fill (init_images.py)."""
        self.init = init_images.prepare_init_images(self.request) if isinstance(self.request, Img2ImgRequest) else None

    # Step 3: per batch

    def start_batches(self) -> None:
        """Before the first batch: progress over both passes, model sigmas, the shared infotext, the output folder."""
        request = self.request
        if isinstance(request, Img2ImgRequest):  # img2img runs int(strength * steps)
            self.first_pass_steps = img2img_steps(request.steps, request.denoising_strength)[1]
            hires_steps = 0
        else:
            self.first_pass_steps = request.steps
            hires_steps = (request.hr_second_pass_steps or request.steps) if self.hires else 0
        self.progress = Progress(self.ctx, request.n_iter, self.first_pass_steps + hires_steps)
        self.discrete = DiscreteSigmas.from_scheduler_config(
            self.model.scheduler_config, is_sdxl=self.model.family.startswith("sdxl")
        )
        self.extra = extra_parameters(request, self.plan)
        if self.ctx.p is not None:
            self.extra.update(self.ctx.p.extra_generation_params)
        self.outdir = self.ctx.saver.output_folder(self.ctx.kind, override=request.outpath_samples)

    def batches(self) -> Iterator[Batch]:
        """The job's n_iter batches in order, batch_size images each."""
        size, plan = self.request.batch_size, self.plan
        for n in range(self.request.n_iter):
            start, end = n * size, (n + 1) * size
            yield Batch(
                n,
                start,
                plan.seeds[start:end],
                plan.subseeds[start:end],
                plan.prompts[start:end],
                plan.negative_prompts[start:end],
                extra=dict(self.extra),
            )

    def apply_batch_hooks(self, batch: Batch) -> ExitStack:
        """Enter the batch hooks (LoRA...) for this batch; leaving the returned stack undoes them.

        The hooks are the extra networks: with `disable_extra_networks` none is entered (A1111
        still removes the tags from the prompt, which the prompt encoder does anyway).
        """
        with ExitStack() as hooks:  # a hook that fails to enter undoes the ones before it
            self._enter_hooks(hooks, self.model, batch)
            batch.models.append(self.model)
            batch.hooks = hooks.pop_all()
            return batch.hooks

    def _enter_hooks(self, hooks: ExitStack, model: GenerationModel, batch: Batch) -> None:
        for hook in [] if self.request.disable_extra_networks else self.ctx.batch_hooks:
            added = hooks.enter_context(hook(model, batch.prompts, batch.negative_prompts))
            batch.extra.update(added or {})
            for warning in getattr(added, "warnings", None) or []:
                self._warn_once(warning)

    def encode_prompt(self, batch: Batch) -> bool:
        """Step 3a: the batch's conditioning, with prompt schedules and AND; False when interrupted meanwhile."""
        request, plan = self.request, self.plan
        try:
            batch.conditioning = self.model.encoder.encode(
                batch.prompts,
                batch.negative_prompts,
                plan.sampler.total_model_evaluations(request.steps),
                plan.clip_skip,
                request.width,
                request.height,
                check_cancelled=self.check_interrupted,
            )
        except SamplingInterrupted as stop:
            self._stopped(stop)
            return False
        batch.embedding_hashes.update(batch.conditioning.embedding_hashes)
        for warning in getattr(batch.conditioning, "warnings", ()):  # e.g. an embedding that was refused
            self._warn_once(warning)
        return True

    def check_interrupted(self) -> None:
        """Raise SamplingInterrupted when the job was interrupted (checked between prompt encodings)."""
        if self.ctx.cancel.interrupted:
            raise SamplingInterrupted(None)

    def batch_noise(self, batch: Batch, latent_hw: tuple[int, int]) -> ImageNoise:
        """The batch's per-image noise at a latent size (A1111: seeds, variation seeds, resize-seed-from, ENSD)."""
        request, model = self.request, self.model
        return ImageNoise(
            (model.latent_channels, *latent_hw),
            batch.seeds,
            batch.subseeds,
            request.subseed_strength,
            request.seed_resize_from_h,
            request.seed_resize_from_w,
            self.plan.settings.eta_noise_seed_delta,
            latent_factor=model.latent_factor,
            device=model.device,
        )

    def prepare_latents(self, batch: Batch) -> None:
        """Step 3b: per-image noise; img2img: the init latents, inpainting masks and an inpainting UNet's channels."""
        request, model, init = self.request, self.model, self.init
        f = model.latent_factor
        latent_hw = (request.height // f, request.width // f)
        batch.noise = self.batch_noise(batch, latent_hw)
        initial = batch.initial_noise = batch.noise.first()
        if init is not None:
            assert isinstance(request, Img2ImgRequest)  # step 2 makes init images for img2img only
            pixels = imaging.pil_to_tensor(init.batch_images(batch.start, batch.size))
            init_latent = model.encode_images(pixels)
            if init_latent.shape[-2:] != latent_hw:  # resize mode 3: upscale in latent space (A1111: bilinear)
                init_latent = F.interpolate(init_latent, size=latent_hw, mode="bilinear", align_corners=False)
                pixels = F.interpolate(
                    pixels, size=(request.height, request.width), mode="bilinear", align_corners=False
                )
            if init.latent_mask is not None:
                keep, repaint = init_images.latent_masks(
                    init.latent_mask, latent_hw, request.mask_round, model.latent_channels, model.device
                )
                if request.inpainting_fill == 2:  # latent noise
                    init_latent = init_latent * keep + initial.clone() * repaint
                elif request.inpainting_fill == 3:  # latent nothing
                    init_latent = init_latent * keep
                batch.blend = InpaintBlend(init_latent, keep, repaint)
            batch.init_latent = init_latent
            if model.is_inpainting:
                if init.latent_mask is not None:
                    mask_px = (
                        imaging.pil_to_tensor([init.latent_mask.convert("RGB")])[:, :1]
                        .add(1)
                        .div(2)
                        .expand(batch.size, 1, -1, -1)
                    )
                else:
                    mask_px = torch.ones(batch.size, 1, pixels.shape[2], pixels.shape[3])
                batch.image_conditioning = init_images.inpainting_image_conditioning(
                    model, pixels, mask_px, batch.size, latent_hw
                )
        elif model.is_inpainting:
            batch.image_conditioning = init_images.inpainting_image_conditioning(
                model, None, None, batch.size, latent_hw
            )

    def denoise(self, batch: Batch) -> bool:
        """Step 3c: the sampler loop; False when interrupted or skipped (the batch keeps what it got so far)."""
        request, model, plan = self.request, self.model, self.plan
        conditioning, noise, initial_noise = batch.conditioning, batch.noise, batch.initial_noise
        assert conditioning is not None and noise is not None and initial_noise is not None  # steps 3a and 3b ran
        guided = GuidedUNet(
            model.unet,
            conditioning,
            request.cfg_scale,
            batch.image_conditioning,
            getattr(conditioning, "unet_kwargs", None),
            hooks=self.denoiser_hooks,
            total_steps=request.steps,
        )
        job = SamplingJob(
            sampler=plan.sampler,
            schedule=plan.schedule,
            steps=request.steps,
            guided=guided,
            discrete=self.discrete,
            prediction_type=model.prediction_type,
            scheduler_config=model.scheduler_config,
            noise=noise.next,
            initial_noise=initial_noise,
            options=plan.options,
            init_latent=batch.init_latent,
            denoising_strength=request.denoising_strength,
            initial_noise_multiplier=plan.initial_noise_multiplier,
            blend=batch.blend,
            control=self.ctx.cancel,
            callback=self.progress,
        )
        job.guided = self.with_refiner(
            batch,
            job,
            hires_pass=False,
            prompts=(batch.prompts, batch.negative_prompts),
            cfg_scale=request.cfg_scale,
            size=(request.width, request.height),
            image_conditioning=batch.image_conditioning,
        )
        finished = True
        try:
            with self.unet_speedups(model.unet, for_hr=False):
                samples = run_sampler(job)
        except SamplingInterrupted as stop:
            # A1111 keeps the image as far as it got (the last x0 prediction).
            self._stopped(stop)
            samples = stop.latest if stop.latest is not None else initial_noise
            finished = False
        batch.samples = batch.blend.apply(samples) if batch.blend is not None else samples
        return finished

    def hires_fix(self, batch: Batch) -> None:
        """Step 3d: upscale the first pass and denoise it again; stopped early, the batch keeps what it got."""
        try:
            batch.samples = self._second_pass(batch)
        except SamplingInterrupted as stop:
            self._stopped(stop)
            if stop.latest is not None:
                batch.samples = stop.latest

    def _second_pass(self, batch: Batch) -> torch.Tensor:
        """A1111 Txt2Img.sample_hr_pass: the upscaled first pass, denoised at the hires size."""
        request, model, plan, ctx = self.request, self.model, self.plan, self.ctx
        assert isinstance(request, Txt2ImgRequest)  # check_inputs enables hires for txt2img only
        f = model.latent_factor
        target_w, target_h = request.hires_size()
        samples = batch.samples
        assert samples is not None  # the first pass (3c) ran
        if request.hr_upscaler in HIRES_LATENT_UPSCALERS:
            mode, antialias = HIRES_LATENT_UPSCALERS[request.hr_upscaler]
            samples = F.interpolate(
                samples,
                size=(target_h // f, target_w // f),
                mode=mode,
                antialias=antialias if mode in ("bilinear", "bicubic") else False,
            )
        else:
            upscaled = []
            first_pass_images = imaging.tensor_to_pil(model.decode_latents(samples))
            # A1111: the first pass is decoded by the model that made it; the hires model encodes the upscale.
            model = self.use_model(batch, self.hires_model(batch), "hr_checkpoint_name")
            for image in first_pass_images:
                if request.hr_upscaler in ("None", "Lanczos"):
                    image = image.resize((target_w, target_h), Image.Resampling.LANCZOS)
                elif request.hr_upscaler == "Nearest":
                    image = image.resize((target_w, target_h), Image.Resampling.NEAREST)
                else:
                    assert ctx.upscale_image is not None  # check_inputs refused a model upscaler without one
                    image = ctx.upscale_image(image, request.hr_upscaler, target_w, target_h)
                    if image.size != (target_w, target_h):
                        image = imaging.resize_image(1, image, target_w, target_h)
                upscaled.append(image)
            samples = model.encode_images(imaging.pil_to_tensor(upscaled))
        model = self.use_model(batch, self.hires_model(batch), "hr_checkpoint_name")
        sampler, schedule = request.hires_sampler_and_schedule()
        steps = request.hr_second_pass_steps or request.steps
        hr_prompts = [request.hr_prompt] * batch.size if request.hr_prompt else batch.prompts
        hr_negatives = (
            [request.hr_negative_prompt] * batch.size if request.hr_negative_prompt else batch.negative_prompts
        )
        conditioning = model.encoder.encode(
            hr_prompts,
            hr_negatives,
            sampler.total_model_evaluations(steps),
            plan.clip_skip,
            target_w,
            target_h,
            check_cancelled=self.check_interrupted,
        )
        batch.embedding_hashes.update(conditioning.embedding_hashes)
        latent_hw = (target_h // f, target_w // f)
        noise = self.batch_noise(batch, latent_hw)
        image_conditioning = None
        if model.is_inpainting:
            image_conditioning = init_images.inpainting_image_conditioning(
                model, None, None, samples.shape[0], latent_hw
            )
        guided = GuidedUNet(
            model.unet,
            conditioning,
            request.hr_cfg if request.hr_cfg is not None else request.cfg_scale,
            image_conditioning,
            getattr(conditioning, "unet_kwargs", None),
            hooks=self.denoiser_hooks,
            total_steps=steps,
        )
        job = SamplingJob(
            sampler=sampler,
            schedule=schedule,
            steps=steps,
            guided=guided,
            discrete=self.discrete,
            prediction_type=model.prediction_type,
            scheduler_config=model.scheduler_config,
            noise=noise.next,
            initial_noise=noise.first(),
            options=plan.options,
            init_latent=samples,
            denoising_strength=request.denoising_strength,
            requested_steps=steps,
            control=ctx.cancel,
            callback=self.progress,
        )
        job.guided = self.with_refiner(
            batch,
            job,
            hires_pass=True,
            prompts=(hr_prompts, hr_negatives),
            cfg_scale=guided.cfg_scale,
            size=(target_w, target_h),
            image_conditioning=image_conditioning,
        )
        self.progress.begin(self.progress.job_no, planned_steps(job))
        with self.unet_speedups(model.unet, for_hr=True):
            return run_sampler(job)

    @contextmanager
    def unet_speedups(self, unet: torch.nn.Module, for_hr: bool) -> Iterator[None]:
        """The pass's UNet with token merging (A1111's get_token_merging_ratio) and the step cache, as set."""
        ratio = token_merging_ratio(self.request, self.plan.settings, self.request.override_settings, for_hr)
        with merged_tokens(unet, ratio), step_cache(unet, self.plan.settings.step_cache_interval):
            yield

    def with_refiner(
        self,
        batch: Batch,
        job: SamplingJob,
        *,
        hires_pass: bool,
        prompts: tuple[list[str], list[str]],
        cfg_scale: float,
        size: tuple[int, int],
        image_conditioning: torch.Tensor | None,
    ) -> Guidance:
        """The pass's guidance, handing over to `refiner_checkpoint` when due (A1111 apply_refiner).

        In a hires job the `hires_fix_refiner_pass` setting says which pass may switch; once
        switched, the rest of the batch (a later pass, the decode) runs on the refiner.
        """
        request, settings = self.request, self.plan.settings
        name = request.refiner_checkpoint
        if name is None or self.model is self.other_models.get(name):
            return job.guided
        passes = settings.hires_fix_refiner_pass
        if self.hires and (passes == "first pass" and hires_pass or passes == "second pass" and not hires_pass):
            return job.guided
        switch = RefinerSwitch(request.refiner_switch_at, settings.refiner_switch_by_sample_steps)
        sampler: SamplerDef = job.sampler

        unswitched = job.guided

        def take_over() -> Guidance:
            refiner = self.named_model(name, "refiner_checkpoint")
            if refiner is self.model:  # the refiner is the model running now: nothing to switch (A1111)
                return unswitched
            self.use_model(batch, refiner, "refiner_checkpoint")
            conditioning = refiner.encoder.encode(
                *prompts, sampler.total_model_evaluations(job.steps), self.plan.clip_skip, *size
            )
            batch.embedding_hashes.update(conditioning.embedding_hashes)
            batch.extra.update({"Refiner": refiner.title, "Refiner switch at": request.refiner_switch_at})
            if self.hires and passes != "second pass":
                batch.extra["Hires refiner"] = passes
            if switch.by_sampling_steps:
                batch.extra["Refiner switch by sampling steps"] = True
            return GuidedUNet(
                refiner.unet,
                conditioning,
                cfg_scale,
                image_conditioning,
                getattr(conditioning, "unet_kwargs", None),
                hooks=self.denoiser_hooks,
                total_steps=job.steps,
            )

        total = sampler.total_model_evaluations(planned_steps(job))
        return SwitchingGuidance(job.guided, switch, self.discrete, total, take_over)

    def hires_model(self, batch: Batch) -> GenerationModel:
        """The hires pass's model: hr_checkpoint_name's, else the job's (A1111 reloads it after a refiner)."""
        request = self.request
        assert isinstance(request, Txt2ImgRequest)  # only txt2img has a hires pass
        if request.hr_checkpoint_name is None:
            return self.ctx.model
        model = self.named_model(request.hr_checkpoint_name, "hr_checkpoint_name")
        batch.extra["Hires checkpoint"] = model.title
        return model

    def named_model(self, name: str, field: str) -> GenerationModel:
        """Another checkpoint for part of the job (refiner, hires), loaded once per job."""
        if name not in self.other_models:
            if self.ctx.load_checkpoint is None:
                raise InvalidRequest(field, "no other checkpoint can be loaded here")
            self.other_models[name] = self.ctx.load_checkpoint(name)
        return self.other_models[name]

    def use_model(self, batch: Batch, model: GenerationModel, field: str) -> GenerationModel:
        """Make `model` the batch's current model; the first time in a batch its tiling and batch hooks start.

        It must continue the job's latents: same latent space, prediction type and inpainting-ness.
        """
        if model is self.model:
            return model
        if not any(model is seen for seen in batch.models):
            base = self.ctx.model
            mismatch = ""
            if (model.latent_channels, model.latent_factor) != (base.latent_channels, base.latent_factor):
                mismatch = "its latent space differs"
            elif model.prediction_type != base.prediction_type:
                mismatch = f"it predicts {model.prediction_type}, not {base.prediction_type}"
            elif model.is_inpainting != base.is_inpainting:
                mismatch = "one of the two is an inpainting model and the other is not"
            if mismatch:
                raise InvalidRequest(field, f"{model.name} cannot take over from {base.name}: {mismatch}")
            batch.hooks.enter_context(_Tiling([model.unet, model.vae], self.request.tiling))
            self._enter_hooks(batch.hooks, model, batch)
            batch.models.append(model)
        self.model = model
        return model

    def decode(self, batch: Batch) -> None:
        """Step 3e: VAE decode (still under the batch hooks: a LoRA may patch the VAE)."""
        assert batch.samples is not None  # steps 3c/3d ran
        pixels = self.model.decode_latents(batch.samples)
        p = self.ctx.p
        if p is not None:  # A1111 postprocess_batch: the batch as [0, 1] images, changed in place or not
            unit = (pixels.clamp(-1, 1) + 1) / 2
            self.ctx.hooks.postprocess_batch(p, unit, batch.number)
            pixels = unit * 2 - 1
        batch.images = imaging.tensor_to_pil(pixels)

    def save(self, batch: Batch) -> None:
        """Step 3f: face restoration, paste-back for inpainting, watermark, infotext, files, result lists."""
        request, plan, ctx, init, result = self.request, self.plan, self.ctx, self.init, self.result
        for i, image in enumerate(batch.images):
            index = batch.start + i
            faces_restored = False
            if request.restore_faces and ctx.restore_faces is not None:
                try:
                    image = ctx.restore_faces(image, plan.settings)
                    faces_restored = True
                except SdStudioError as exc:  # a missing face model must not lose the image
                    self._warn_once(f"face restoration skipped: {exc}")
            if ctx.p is not None:
                ctx.p.batch_index = i
                postprocessed = PostprocessImageArgs(image)
                ctx.hooks.postprocess_image(ctx.p, postprocessed)
                image = postprocessed.image
                batch.extra.update(ctx.p.extra_generation_params)  # A1111 writes the infotext after this hook
            if init is not None and init.overlays:
                image = imaging.apply_overlay(
                    image, init.paste_to, init.batch_overlays(batch.start, len(batch.images))[i]
                )
            if plan.settings.enable_invisible_watermark and ctx.watermark is not None:
                try:
                    image = ctx.watermark(image)  # CompVis put_watermark, before saving
                except SdStudioError as exc:  # e.g. too small for DWT-DCT: keep the image, say so
                    self._warn_once(f"watermark skipped: {exc}")
            infotext = format_infotext(
                plan.prompts[index],
                plan.negative_prompts[index],
                generation_parameters(
                    request,
                    plan,
                    index,
                    ctx,
                    {**batch.extra, **textual_inversion_hashes(batch.embedding_hashes)},
                    faces_restored,
                ),
            )
            if plan.settings.samples_save and not request.do_not_save_samples:
                saved = self.save_file(image, infotext, self.outdir, plan.seeds[index], plan.prompts[index])
                result.saved_paths.append(saved)
            if plan.settings.enable_pnginfo:
                image.info["parameters"] = infotext  # A1111: the returned image carries its infotext
            result.images.append(image)
            result.infotexts.append(infotext)
            result.seeds.append(plan.seeds[index])
            result.subseeds.append(plan.subseeds[index])
            result.prompts.append(plan.prompts[index])
            result.negative_prompts.append(plan.negative_prompts[index])

    # Steps 4 and 5: grid, info

    def make_grid(self) -> None:
        """Step 4: the grid of all images; saved and/or returned first, as the settings say."""
        request, plan, ctx, result = self.request, self.plan, self.ctx, self.result
        if len(result.images) > 1 and not request.do_not_save_grid:
            grid = image_grid(
                result.images, n_rows=int(getattr(plan.settings, "n_rows", -1)), batch_size=request.batch_size
            )
            grid_infotext = result.infotexts[0] if result.infotexts else None
            if plan.settings.grid_save:
                grid_dir = ctx.saver.output_folder(ctx.kind, grid=True, override=request.outpath_grids)
                result.grid_path = self.save_file(grid, grid_infotext, grid_dir, grid=True)
            if plan.settings.return_grid:
                result.images.insert(0, grid)
                result.grid_infotext = grid_infotext
                result.index_of_first_image = 1

    def save_file(
        self,
        image: Image.Image,
        infotext: str | None,
        folder: Path,
        seed: int | None = None,
        prompt: str = "",
        grid: bool = False,
    ) -> Path:
        """Write one image or grid, the on_before_image_saved / on_image_saved callbacks around it."""
        hooks, saver = self.ctx.hooks, self.ctx.saver
        params = ImageSaveParams(image, self.ctx.p, "", {"parameters": infotext} if infotext is not None else {})
        hooks.before_image_saved(params)
        text = params.pnginfo.get("parameters")
        if grid:
            path = saver.save_grid(params.image, folder, text)
        else:
            path = saver.save_image(params.image, folder, seed, prompt, text)
        params.filename = str(path)
        hooks.image_saved(params)
        return path

    def fill_info(self) -> None:
        """Step 5: the result's info, A1111's Processed.js() fields."""
        self.result.info = job_info(self.request, self.plan, self.result, self.ctx)

    @property
    def denoiser_hooks(self) -> DenoiserHooks | None:
        """The scripts' cfg_denoiser/cfg_denoised hooks (None without scripts: nothing to call each step)."""
        return self.ctx.hooks if self.ctx.p is not None else None

    def _warn_once(self, warning: str) -> None:
        if warning not in self.result.warnings:
            self.result.warnings.append(warning)

    def _stopped(self, stop: SamplingInterrupted) -> None:
        """Interrupt ends the job after this batch; skip (SamplingSkipped) only ends this batch."""
        if not isinstance(stop, SamplingSkipped):
            self.result.interrupted = True


def run_generation(
    request: Txt2ImgRequest | Img2ImgRequest,
    ctx: JobContext,
    apply_styles: Callable[[str, str, list[str]], tuple[str, str]] | None = None,
) -> GenerationResult:
    """Run a txt2img or img2img job from start to finish (the steps of the module docstring)."""
    return GenerationJob(request, ctx, apply_styles).run()
