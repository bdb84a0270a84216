"""The denoise loop: classifier-free guidance in one UNet call, driving any sampler row.

`GuidedUNet` evaluates the UNet once per step on [cond rows..., uncond rows] and combines
the outputs as A1111's CFGDenoiser.combine_denoised does (AND-composition: every
sub-prompt row adds weight * cfg_scale * (cond - uncond)). Because x0 is affine in the
model output for a fixed x and sigma, combining raw outputs equals combining x0's.

`KarrasDenoiser` turns it into k-diffusion's `denoise(x, sigma) -> x0` for eps- and
v-prediction models (CompVisDenoiser / CompVisVDenoiser), blends the known region back
in for inpainting (A1111's `init_latent * mask + nmask * denoised`), and checks for
interrupt/skip before each evaluation. `run_sampler` runs either kind of sampler row over
txt2img or img2img (a partial schedule starting from a noised init latent).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from sdstudio.engine.cancel import CancelToken
from sdstudio.engine.samplers import (
    CFG_PP_SCALE_MULTIPLIER,
    DiscreteSigmas,
    NoiseSource,
    SamplerDef,
    SamplerOptions,
    ScheduleType,
    SigmaSampler,
    StepCallback,
    StepInfo,
    ddim_cfgpp_step,
    make_diffusers_scheduler,
    sigmas_for,
)


class SamplingInterrupted(Exception):
    """Raised inside the loop when the user interrupts; carries the last x0 prediction."""

    def __init__(self, latest: torch.Tensor | None) -> None:
        super().__init__("interrupted")
        self.latest = latest


class SamplingSkipped(SamplingInterrupted):
    """Raised inside the loop when the user skips the current image."""


ConditionRows = list[list[tuple[int, float]]]
"""Per image, the (row in cond, weight) pairs of its AND-ed sub-prompts."""


class StepConditioning(Protocol):
    """Prompt conditioning as the loop consumes it (A1111 reconstruct_(multi)cond_batch).

    `at_step(step)` gives (cond [N, T, D], conds_list) where conds_list[i] lists the
    (row in cond, weight) pairs of image i's AND-ed sub-prompts; `uncond_at_step(step)`
    gives [B, T, D]. Models with pooled text embeddings (SDXL) also expose `unet_kwargs`.
    `embedding_hashes` names the textual-inversion embeddings the prompts used (for the infotext).
    """

    def at_step(self, step: int) -> tuple[torch.Tensor, ConditionRows]: ...

    def uncond_at_step(self, step: int) -> torch.Tensor: ...

    @property
    def embedding_hashes(self) -> dict[str, str]: ...


@dataclass
class FixedConditioning:
    """Conditioning that does not change over steps: one sub-prompt of weight 1 per image."""

    cond: torch.Tensor
    uncond: torch.Tensor
    conds_list: ConditionRows | None = None

    def at_step(self, step: int) -> tuple[torch.Tensor, ConditionRows]:
        rows = self.conds_list or [[(i, 1.0)] for i in range(self.cond.shape[0])]
        return self.cond, rows

    def uncond_at_step(self, step: int) -> torch.Tensor:
        return self.uncond

    @property
    def embedding_hashes(self) -> dict[str, str]:
        """No textual-inversion embeddings: the prompts were encoded as plain text."""
        return {}


def _pad_tokens(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Pad a [N, T, D] conditioning to `length` tokens by repeating its last 77-token chunk.

    A1111 pads the shorter of cond/uncond with encodings of the empty prompt; repeating the
    last chunk of the shorter one is the same when it is the padding of an empty prompt.
    """
    if tensor.shape[1] >= length:
        return tensor
    chunk = tensor[:, -77:] if tensor.shape[1] >= 77 else tensor
    reps = math.ceil((length - tensor.shape[1]) / chunk.shape[1])
    return torch.cat([tensor, chunk.repeat(1, reps, 1)], dim=1)[:, :length]


class Guidance(Protocol):
    """What the sampler loop calls each step: a `GuidedUNet`, or one that may hand over to another model."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, step: int) -> torch.Tensor: ...

    def with_uncond(
        self, x: torch.Tensor, t: torch.Tensor, step: int, scale_multiplier: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class CFGDenoiserParams:
    """A1111's argument to on_cfg_denoiser, before each guided UNet call; `x` and the conds may be replaced.

    `sigma` is the model's timestep input here (sdstudio guides a discrete-time UNet).
    """

    x: torch.Tensor
    image_cond: torch.Tensor | None
    sigma: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    text_cond: torch.Tensor
    text_uncond: torch.Tensor


@dataclass
class CFGDenoisedParams:
    """A1111's argument to on_cfg_denoised: `x` is the guided output and may be replaced."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int


@dataclass
class UNetCallParams:
    """The batched UNet call about to run: what a hook needs to add UNet keyword arguments (ControlNet).

    Rows of `x_in`/`t_in`/`text` are the cond rows then the uncond rows; `row_order[r]` is the
    image (0..batch-1) row r belongs to, and the last `batch` rows are the unconditional ones.
    """

    x_in: torch.Tensor
    t_in: torch.Tensor
    text: torch.Tensor
    step: int
    total_steps: int
    row_order: list[int]
    batch: int
    unet_kwargs: dict[str, Any] = field(default_factory=dict)  # what the call already passes (SDXL added_cond_kwargs)


RESIDUAL_KWARGS = ("down_block_additional_residuals", "mid_block_additional_residual")
"""UNet keyword arguments that several hooks add up (diffusers' ControlNet residuals)."""


def merge_unet_kwargs(into: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """`into` with `added` merged in: residuals summed (several ControlNets), other keys replaced."""
    merged = dict(into)
    for key, value in added.items():
        if key in RESIDUAL_KWARGS and merged.get(key) is not None and value is not None:
            old = merged[key]
            if isinstance(value, (tuple, list)):
                merged[key] = tuple(a + b for a, b in zip(old, value, strict=True))
            else:
                merged[key] = old + value
        else:
            merged[key] = value
    return merged


class DenoiserHooks(Protocol):
    """Called around each guided UNet call (A1111's on_cfg_denoiser / on_cfg_denoised callbacks)."""

    def cfg_denoiser(self, params: CFGDenoiserParams) -> None: ...

    def cfg_denoised(self, params: CFGDenoisedParams) -> None: ...

    def unet_kwargs(self, params: UNetCallParams) -> dict[str, Any]:
        """Extra UNet keyword arguments for this call (residuals are summed with the others'); {} for none."""
        ...


class GuidedUNet:
    """The UNet with classifier-free guidance: `(x_scaled, t, step) -> guided model output`."""

    def __init__(
        self,
        unet: torch.nn.Module,
        conditioning: StepConditioning,
        cfg_scale: float,
        image_conditioning: torch.Tensor | None = None,
        unet_kwargs: Callable[[int, list[int]], dict[str, Any]] | None = None,
        hooks: DenoiserHooks | None = None,
        total_steps: int = 0,
    ) -> None:
        self.unet = unet
        self.conditioning = conditioning
        self.cfg_scale = float(cfg_scale)
        self.image_conditioning = image_conditioning
        self.unet_kwargs = unet_kwargs
        self.hooks = hooks  # scripts' cfg_denoiser/cfg_denoised callbacks
        self.total_steps = total_steps  # what the hooks are told (A1111 total_sampling_steps)
        self.dtype = next(unet.parameters()).dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor, step: int) -> torch.Tensor:
        return self.with_uncond(x, t, step)[0]

    def with_uncond(
        self, x: torch.Tensor, t: torch.Tensor, step: int, scale_multiplier: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided output at cfg_scale * scale_multiplier, the unconditional output) from one UNet call."""
        cond, conds_list = self.conditioning.at_step(step)
        uncond = self.conditioning.uncond_at_step(step)
        image_conditioning = self.image_conditioning
        if self.hooks is not None:
            params = CFGDenoiserParams(x, image_conditioning, t, step, self.total_steps, cond, uncond)
            self.hooks.cfg_denoiser(params)
            x, image_conditioning, t = params.x, params.image_cond, params.sigma
            cond, uncond = params.text_cond, params.text_uncond
        batch = x.shape[0]
        repeats = [len(rows) for rows in conds_list]
        t = t.reshape(-1).expand(batch) if t.numel() == 1 else t
        x_in = torch.cat([x[i : i + 1].expand(n, *x.shape[1:]) for i, n in enumerate(repeats)] + [x])
        t_in = torch.cat([t[i : i + 1].expand(n) for i, n in enumerate(repeats)] + [t])
        if image_conditioning is not None:
            ic = image_conditioning
            ic_in = torch.cat([ic[i : i + 1].expand(n, *ic.shape[1:]) for i, n in enumerate(repeats)] + [ic])
            x_in = torch.cat([x_in, ic_in.to(x_in)], dim=1)
        length = max(cond.shape[1], uncond.shape[1])
        text = torch.cat([_pad_tokens(cond, length), _pad_tokens(uncond, length)])
        row_order = [i for i, n in enumerate(repeats) for _ in range(n)] + list(range(batch))
        extra = self.unet_kwargs(step, row_order) if self.unet_kwargs is not None else {}
        if self.hooks is not None:
            call = UNetCallParams(x_in, t_in, text, step, self.total_steps, row_order, batch, extra)
            extra = merge_unet_kwargs(extra, self.hooks.unet_kwargs(call))
            for key in RESIDUAL_KWARGS:  # in the UNet's dtype: a ControlNet may run in another (fp32 beside bf16)
                value = extra.get(key)
                if isinstance(value, (tuple, list)):
                    extra[key] = tuple(residual.to(self.dtype) for residual in value)
                elif value is not None:
                    extra[key] = value.to(self.dtype)
        out = self.unet(
            x_in.to(self.dtype),
            t_in.to(torch.float32),
            encoder_hidden_states=text.to(self.dtype),
            return_dict=False,
            **extra,
        )[0].float()
        guided = self.combine(out, conds_list, batch, self.cfg_scale * scale_multiplier)
        if self.hooks is not None:
            denoised = CFGDenoisedParams(guided, step, self.total_steps)
            self.hooks.cfg_denoised(denoised)
            guided = denoised.x
        return guided, out[-batch:]

    def combine(self, out: torch.Tensor, conds_list: ConditionRows, batch: int, cfg_scale: float) -> torch.Tensor:
        """uncond + sum_k w_k * cfg * (cond_k - uncond) per image (A1111 combine_denoised)."""
        uncond_out = out[-batch:]
        result = uncond_out.clone()
        for i, rows in enumerate(conds_list):
            for row, weight in rows:
                result[i] += (out[row] - uncond_out[i]) * (weight * cfg_scale)
        return result


@dataclass
class InpaintBlend:
    """Keep the unmasked region equal to the init latent (mask = 1 where kept)."""

    init_latent: torch.Tensor
    mask: torch.Tensor
    nmask: torch.Tensor

    def apply(self, latent: torch.Tensor) -> torch.Tensor:
        return self.init_latent * self.mask + self.nmask * latent


class KarrasDenoiser:
    """k-diffusion's `denoise(x, sigma) -> x0` over a guided eps/v-prediction UNet."""

    def __init__(
        self,
        guided: Guidance,
        discrete: DiscreteSigmas,
        prediction_type: str,
        control: CancelToken,
        blend: InpaintBlend | None = None,
    ) -> None:
        self.guided = guided
        self.discrete = discrete
        self.v_prediction = prediction_type == "v_prediction"
        self.control = control
        self.blend = blend
        self.evaluations = 0
        self.latest: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        _check(self.control, self.latest)
        sigma = sigma.reshape(-1).to(x)
        s = sigma.view(-1, *([1] * (x.ndim - 1)))
        c_in = 1 / (s**2 + 1) ** 0.5
        t = self.discrete.sigma_to_t(sigma)
        out = self.guided(x * c_in, t, self.evaluations)
        if self.v_prediction:  # CompVisVDenoiser: c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1)
            denoised = x / (s**2 + 1) - out * s / (s**2 + 1) ** 0.5
        else:  # CompVisDenoiser: x0 = x - sigma * eps
            denoised = x - out * s
        if self.blend is not None:
            denoised = self.blend.apply(denoised)
        self.evaluations += 1
        self.latest = denoised
        return denoised


def _check(control: CancelToken, latest: torch.Tensor | None) -> None:
    if control.interrupted:
        raise SamplingInterrupted(latest)
    if control.skipped:
        raise SamplingSkipped(latest)


def img2img_steps(steps: int, denoising_strength: float, requested_steps: int | None = None) -> tuple[int, int]:
    """(schedule length, denoising steps t_enc) for img2img (A1111 setup_img2img_steps).

    With explicit `requested_steps` (the hires pass) the schedule is stretched so that
    exactly that many steps run; otherwise `int(strength * steps)` of `steps` run.
    """
    if requested_steps is not None:
        total = int(requested_steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
        return total, requested_steps - 1
    return steps, int(min(denoising_strength, 0.999) * steps)


@dataclass
class SamplingJob:
    """Everything one batch's denoise needs, independent of the sampler kind."""

    sampler: SamplerDef
    schedule: ScheduleType
    steps: int
    guided: Guidance
    discrete: DiscreteSigmas
    prediction_type: str
    scheduler_config: dict[str, Any]
    noise: Callable[[], torch.Tensor]  # fresh per-image noise (seeds.ImageNoise.next)
    initial_noise: torch.Tensor
    options: SamplerOptions = field(default_factory=SamplerOptions)
    init_latent: torch.Tensor | None = None  # img2img
    denoising_strength: float = 1.0
    requested_steps: int | None = None  # hires pass: run exactly this many steps
    initial_noise_multiplier: float = 1.0
    blend: InpaintBlend | None = None
    control: CancelToken = field(default_factory=CancelToken)
    callback: StepCallback | None = None


def planned_steps(job: SamplingJob) -> int:
    """How many sampler steps (callbacks) the job will report."""
    if job.init_latent is None:
        return job.steps
    if job.requested_steps is not None:
        return job.requested_steps
    return img2img_steps(job.steps, job.denoising_strength)[1]


def run_sampler(job: SamplingJob) -> torch.Tensor:
    """Denoise and return the final latent (model space); raises SamplingInterrupted/Skipped."""
    sampler = job.sampler
    if sampler.diffusers_class is not None:  # a timestep sampler (is_timestep_sampler, spelled out so mypy narrows it)
        return _run_timestep_sampler(job, sampler.diffusers_class)
    assert sampler.function is not None  # every row is one kind or the other
    return _run_sigma_sampler(job, sampler.function)


def _run_sigma_sampler(job: SamplingJob, sample: SigmaSampler) -> torch.Tensor:
    denoiser = KarrasDenoiser(job.guided, job.discrete, job.prediction_type, job.control, job.blend)
    noise = job.initial_noise
    if job.init_latent is None:
        sigmas = sigmas_for(job.sampler, job.schedule, job.steps, job.discrete).to(noise.device)
        x = noise * sigmas[0]
    else:
        total, t_enc = img2img_steps(job.steps, job.denoising_strength, job.requested_steps)
        if t_enc <= 0 and job.requested_steps is None:
            return job.init_latent  # strength 0: nothing to denoise
        sigmas = sigmas_for(job.sampler, job.schedule, total, job.discrete).to(noise.device)
        sigmas = sigmas[total - t_enc - 1 :]
        x = job.init_latent + noise * sigmas[0] * job.initial_noise_multiplier
    options = job.options
    sampler_noise: NoiseSource = lambda sigma, sigma_next: job.noise()  # noqa: E731
    kwargs: dict[str, int] = {}
    if job.sampler.takes_step_count and job.sampler.name == "DPM fast":
        kwargs["steps"] = len(sigmas) - 1
    try:
        return sample(denoiser, x, sigmas, sampler_noise, job.callback, options, **kwargs)
    except SamplingInterrupted as stop:
        stop.latest = denoiser.latest
        raise


def _run_timestep_sampler(job: SamplingJob, diffusers_class: str) -> torch.Tensor:
    overrides = dict(job.sampler.diffusers_config)
    overrides.update(job.schedule.diffusers_config)
    overrides["prediction_type"] = job.prediction_type
    scheduler = make_diffusers_scheduler(diffusers_class, job.scheduler_config, overrides)
    noise = job.initial_noise
    if job.init_latent is None:
        scheduler.set_timesteps(job.steps, device=noise.device)
        timesteps = scheduler.timesteps
        x = noise * scheduler.init_noise_sigma
    else:
        total, t_enc = img2img_steps(job.steps, job.denoising_strength, job.requested_steps)
        count = t_enc + 1 if job.requested_steps is not None else t_enc
        if count <= 0:
            return job.init_latent
        scheduler.set_timesteps(max(total, count), device=noise.device)
        all_timesteps = scheduler.timesteps
        timesteps = all_timesteps[len(all_timesteps) - count :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(len(all_timesteps) - count)
        x = scheduler.add_noise(job.init_latent, noise * job.initial_noise_multiplier, timesteps[:1])
    latest: torch.Tensor | None = None
    accepts = scheduler.step.__code__.co_varnames
    for i, t in enumerate(timesteps):
        _check(job.control, latest)
        if job.sampler.cfg_pp:
            x, latest = _ddim_cfgpp_step(job, x, t, timesteps[i + 1] if i + 1 < len(timesteps) else None, i)
        else:
            model_input = scheduler.scale_model_input(x, t)
            out = job.guided(model_input, t.reshape(1).float().to(x.device), i)
            kwargs: dict[str, float | torch.Tensor] = {}
            if "eta" in accepts:
                kwargs["eta"] = job.options.eta
                if job.options.eta > 0 and "variance_noise" in accepts:
                    kwargs["variance_noise"] = job.noise()
            result = scheduler.step(out, t, x, return_dict=True, **kwargs)
            x = result.prev_sample
            latest = getattr(result, "pred_original_sample", None)
            if latest is None:
                latest = x
        if job.blend is not None:
            if i + 1 < len(timesteps):
                known = scheduler.add_noise(job.blend.init_latent, job.initial_noise, timesteps[i + 1 : i + 2])
                x = job.blend.mask * known + job.blend.nmask * x
            latest = job.blend.apply(latest)
        if job.callback is not None:
            job.callback(StepInfo(i, x, float(t), latest))
    return x


def _ddim_cfgpp_step(
    job: SamplingJob, x: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor | None, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM CFG++ from timestep t to t_prev (None: the last step, to alphas_cumprod[0] as DDIM's): (x, x0)."""
    alphas = job.discrete.alphas_cumprod
    alpha = float(alphas[int(t)])
    alpha_prev = float(alphas[int(t_prev) if t_prev is not None else 0])
    guided, uncond = job.guided.with_uncond(x, t.reshape(1).float().to(x.device), step, CFG_PP_SCALE_MULTIPLIER)
    if job.prediction_type == "v_prediction":  # eps = sqrt(a) v + sqrt(1 - a) x (Salimans & Ho 2022)
        guided, uncond = (alpha**0.5 * out + (1 - alpha) ** 0.5 * x for out in (guided, uncond))
    noise = job.noise() if job.options.eta > 0 else None
    return ddim_cfgpp_step(x, guided, uncond, alpha, alpha_prev, job.options.eta, noise)
