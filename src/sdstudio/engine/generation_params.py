"""Infotext parameters and the info dict of a job (A1111 create_infotext and Processed.js)."""

from __future__ import annotations

import math
from typing import Any

from sdstudio.engine.job_context import JobContext, Plan
from sdstudio.engine.request import GenerationResult, Img2ImgRequest, Txt2ImgRequest
from sdstudio.engine.samplers import (
    BETA_SCHEDULE_ALPHA,
    BETA_SCHEDULE_BETA,
    effective_schedule,
    infotext_schedule_label,
)
from sdstudio.engine.token_merging import token_merging_ratio

# SamplerOptions field -> (infotext key, the value that leaves it out); A1111 KDiffusionSampler.initialize.
_SIGMA_PARAMETERS = {
    "s_churn": ("Sigma churn", 0.0),
    "s_tmin": ("Sigma tmin", 0.0),
    "s_tmax": ("Sigma tmax", 0.0),  # 0 (or less) = infinity
    "s_noise": ("Sigma noise", 1.0),
}


def generation_parameters(
    request: Txt2ImgRequest | Img2ImgRequest,
    plan: Plan,
    index: int,
    ctx: JobContext,
    extra: dict[str, Any],
    faces_restored: bool = False,
) -> dict[str, Any]:
    """The infotext parameters of image `index`, in A1111's order (create_infotext).

    `faces_restored`: face restoration ran on this image (asked for but unavailable or failed, it is not named).
    """
    s = plan.settings
    sampler = plan.sampler
    default_eta = sampler.default_eta
    runs_beta = sampler.function is not None and effective_schedule(sampler, plan.schedule).name == "beta"
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": sampler.name,
        "Schedule type": infotext_schedule_label(sampler, plan.schedule),
        "CFG scale": request.cfg_scale,
        "Seed": plan.seeds[index],
        "Face restoration": s.face_restoration_model if faces_restored else None,
        "Size": f"{request.width}x{request.height}",
        "Model hash": ctx.model.short_hash or None,
        "Model": ctx.model.name or None,
        "VAE hash": ctx.model.vae_hash or None,
        "VAE": ctx.model.vae_name or None,
        "Variation seed": None if request.subseed_strength == 0 else plan.subseeds[index],
        "Variation seed strength": None if request.subseed_strength == 0 else request.subseed_strength,
        "Seed resize from": None
        if request.seed_resize_from_w <= 0 or request.seed_resize_from_h <= 0
        else f"{request.seed_resize_from_w}x{request.seed_resize_from_h}",
        "Denoising strength": None,
        "Conditional mask weight": 1.0 if ctx.model.is_inpainting else None,
        "Clip skip": None if plan.clip_skip <= 1 else plan.clip_skip,
        "ENSD": s.eta_noise_seed_delta if (s.eta_noise_seed_delta and sampler.uses_noise) else None,
        "Token merging ratio": token_merging_ratio(request, s, request.override_settings, for_hr=False) or None,
        "Token merging ratio hr": (
            token_merging_ratio(request, s, request.override_settings, for_hr=True) or None
            if isinstance(request, Txt2ImgRequest) and request.enable_hr
            else None
        ),
        "Step cache interval": s.step_cache_interval if s.step_cache_interval > 1 else None,
        "RNG": s.randn_source if s.randn_source != "GPU" else None,
        "Tiling": "True" if request.tiling else None,
        # A1111's k-diffusion samplers write the Beta schedule's shape whenever they run it.
        "Beta schedule alpha": BETA_SCHEDULE_ALPHA if runs_beta else None,
        "Beta schedule beta": BETA_SCHEDULE_BETA if runs_beta else None,
        # A1111's samplers add "Eta" to extra_generation_params when it is not their default.
        "Eta": plan.options.eta if sampler.uses_eta and plan.options.eta != default_eta else None,
    }
    params.update(sigma_parameters(request, plan))
    params.update(extra)
    params["Version"] = ctx.version or None
    return params


def sigma_parameters(request: Txt2ImgRequest | Img2ImgRequest, plan: Plan) -> dict[str, Any]:
    """The "Sigma churn/tmin/tmax/noise" not at their default and read by a sampler of the job (hires pass included)."""
    samplers = [plan.sampler]
    if isinstance(request, Txt2ImgRequest) and request.enable_hr:
        samplers.append(request.hires_sampler_and_schedule()[0])
    read = {option for sampler in samplers for option in sampler.sigma_options}
    params: dict[str, Any] = {}
    for option, (key, default) in _SIGMA_PARAMETERS.items():
        value = getattr(plan.options, option)
        if option == "s_tmax" and not 0 < value < math.inf:
            continue
        if option in read and value != default:
            params[key] = value
    return params


def textual_inversion_hashes(hashes: dict[str, str]) -> dict[str, Any]:
    """A1111's "TI hashes": `name: shorthash` of the embeddings used, ':' and ',' taken out of names."""
    text = ", ".join(f"{name.replace(':', '').replace(',', '')}: {short}" for name, short in hashes.items() if short)
    return {"TI hashes": text} if text else {}


def extra_parameters(request: Txt2ImgRequest | Img2ImgRequest, plan: Plan) -> dict[str, Any]:
    """The request's hires-fix and img2img parameters, the same for every image of the job."""
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
        hires_sampler, hires_schedule = request.hires_sampler_and_schedule()
        if hires_sampler.name != plan.sampler.name:
            extra["Hires sampler"] = hires_sampler.name
        if request.hr_prompt and request.hr_prompt != request.prompt:
            extra["Hires prompt"] = request.hr_prompt
        if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
            extra["Hires negative prompt"] = request.hr_negative_prompt
        if request.hr_cfg is not None and request.hr_cfg != request.cfg_scale:
            extra["Hires CFG Scale"] = request.hr_cfg  # Forge's key (A1111 has no hires CFG)
        # A1111 names the hires schedule when it is not the first pass's (sd_samplers_kdiffusion.get_sigmas).
        hires_label = infotext_schedule_label(hires_sampler, hires_schedule)
        if hires_label != infotext_schedule_label(plan.sampler, plan.schedule):
            extra["Hires schedule type"] = hires_label
    if isinstance(request, Img2ImgRequest):
        extra["Denoising strength"] = request.denoising_strength
        if request.mask is not None:
            extra["Mask blur"] = request.mask_blur_x if request.mask_blur_x == request.mask_blur_y else None
            extra["Mask blur x"] = request.mask_blur_x if request.mask_blur_x != request.mask_blur_y else None
            extra["Mask blur y"] = request.mask_blur_y if request.mask_blur_x != request.mask_blur_y else None
            if request.inpaint_full_res:
                extra["Inpaint area"] = "Only masked"
                extra["Masked area padding"] = request.inpaint_full_res_padding
            extra["Masked content"] = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}[
                request.inpainting_fill
            ]
        if plan.initial_noise_multiplier != 1.0:
            extra["Noise multiplier"] = plan.initial_noise_multiplier
    return extra


def job_info(
    request: Txt2ImgRequest | Img2ImgRequest, plan: Plan, result: GenerationResult, ctx: JobContext
) -> dict[str, Any]:
    """The finished job as A1111's Processed.js() fields."""
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
        "extra_generation_params": extra_parameters(request, plan),
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
