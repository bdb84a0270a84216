"""Samplers and schedule types: A1111's declarative tables and the algorithms behind them.

Two kinds of sampler, as in A1111:

* sigma samplers (Euler, Euler a, LMS, Heun, DPM2, DPM2 a, DPM++ 2S a, DPM++ 2M, DPM++ SDE,
  DPM++ 2M SDE (midpoint and Heun), DPM++ 3M SDE, DPM fast, DPM adaptive, Restart, LCM) are
  functions of (denoiser, x, sigmas, noise, callback) written from the k-diffusion algorithms
  (Karras et al. 2022; Lu et al. DPM-Solver / DPM-Solver++ 2022; Xu et al. 2023 for Restart,
  as A1111's sd_samplers_extra does it). They work on any schedule type,
  which is why they are not diffusers scheduler objects: diffusers' classes each support a
  different subset of schedules (EulerAncestral has no Karras, LMS needs scipy, none has
  Polyexponential), and A1111's images come from these exact algorithms.
* timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) are diffusers scheduler classes driven over
  integer timesteps, as A1111 drives its own DDIM/PLMS/UniPC implementations; DDIM CFG++ takes
  DDIM's timesteps and does its own step (ddim_cfgpp_step), which needs the unconditional
  prediction as well as the guided one.

Every row also names its nearest diffusers equivalent (`diffusers_equivalent`), used by
the benchmark and by tests that check our algorithm against diffusers'.

Randomness only ever comes from the `noise` callable passed in (per-image CPU generators,
see seeds.py); no function here touches a global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import torch

# --------------------------------------------------------------------------------------
# Types shared by all samplers
# --------------------------------------------------------------------------------------

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`denoiser(x, sigma_per_item) -> predicted x0` (k-diffusion's model interface)."""

NoiseSource = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`noise(sigma, sigma_next) -> unit normal noise shaped like x`, from per-image generators."""


class StepInfo(NamedTuple):
    """What a sampler reports after each step (k-diffusion's callback dict, typed)."""

    step: int
    x: torch.Tensor
    sigma: float
    denoised: torch.Tensor


StepCallback = Callable[[StepInfo], None]


def _report(
    callback: StepCallback | None, i: int, x: torch.Tensor, sigma: torch.Tensor | float, denoised: torch.Tensor
) -> None:
    if callback is not None:
        callback(StepInfo(i, x, float(sigma), denoised))


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative dx/dsigma (Karras et al. 2022, eq. 3 with D = denoiser)."""
    return (x - denoised) / sigma


def _ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a step into a deterministic part down to sigma_down and fresh noise sigma_up."""
    if not eta:
        return sigma_to, sigma_to * 0
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _churn(sigma: torch.Tensor, i: int, n: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """Karras et al. 2022 stochastic churn gamma (zero unless s_churn > 0)."""
    if s_churn <= 0 or not (s_tmin <= float(sigma) <= (s_tmax if s_tmax > 0 else float("inf"))):
        return 0.0
    return min(s_churn / n, 2**0.5 - 1)


def _t_of(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma.log()


def _sigma_of(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


# --------------------------------------------------------------------------------------
# The model's discrete noise levels (k-diffusion's DiscreteSchedule / CompVisDenoiser)
# --------------------------------------------------------------------------------------


class DiscreteSigmas:
    """The 1000 training noise levels of a DDPM-trained model, with sigma<->t interpolation."""

    def __init__(self, alphas_cumprod: torch.Tensor, is_sdxl: bool = False) -> None:
        self.alphas_cumprod = alphas_cumprod.double()
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().float()
        self.log_sigmas = self.sigmas.log()
        # SD1 and SDXL share their noise levels; Align Your Steps still has a table for each.
        self.is_sdxl = is_sdxl

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any], is_sdxl: bool = False) -> DiscreteSigmas:
        """Build from a diffusers scheduler config (beta_start, beta_end, beta_schedule)."""
        n = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        schedule = config.get("beta_schedule", "scaled_linear")
        if config.get("trained_betas") is not None:
            betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
        elif schedule == "linear":
            betas = torch.linspace(start, end, n, dtype=torch.float64)
        else:  # "scaled_linear", the SD1/SD2/SDXL schedule
            betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1.0 - betas, dim=0), is_sdxl)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep of a sigma (linear interpolation in log sigma)."""
        log_sigma = sigma.float().log()
        dists = log_sigma - self.log_sigmas.to(sigma.device)[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas.to(sigma.device)[low_idx], self.log_sigmas.to(sigma.device)[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma of a fractional timestep (linear interpolation in log sigma)."""
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()


# --------------------------------------------------------------------------------------
# Schedule types (A1111 modules/sd_schedulers.py); each returns n sigmas plus a final 0,
# except where A1111's does not (KL Optimal, DDIM: see their docstrings)
# --------------------------------------------------------------------------------------


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def uniform_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas, rho: float | None = None
) -> torch.Tensor:
    """Evenly spaced training timesteps from last to first (k-diffusion get_sigmas)."""
    t_max = len(model.sigmas) - 1
    t = torch.linspace(t_max, 0, n)
    return _append_zero(model.t_to_sigma(t))


def _timestep_range_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas, sgm: bool
) -> torch.Tensor:
    """Timesteps evenly spaced from sigma_max's to sigma_min's (A1111 normal_scheduler); sgm: over n+1, last dropped."""
    start = float(model.sigma_to_t(torch.tensor(sigma_max)))
    end = float(model.sigma_to_t(torch.tensor(sigma_min)))
    ts = torch.linspace(start, end, n + 1)[:-1] if sgm else torch.linspace(start, end, n)
    return _append_zero(model.t_to_sigma(ts))


def sgm_uniform_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas, rho: float | None = None
) -> torch.Tensor:
    """Evenly spaced timesteps over n+1 points, last dropped (A1111 sgm_uniform, SDXL-Turbo/LCM)."""
    return _timestep_range_sigmas(n, sigma_min, sigma_max, model, sgm=True)


def normal_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas, rho: float | None = None
) -> torch.Tensor:
    """Evenly spaced timesteps, both ends included (A1111 normal_scheduler; ComfyUI's "normal")."""
    return _timestep_range_sigmas(n, sigma_min, sigma_max, model, sgm=False)


def simple_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas, rho: float | None = None
) -> torch.Tensor:
    """Every (1000/n)-th training sigma from the top, indices truncated (A1111 simple_scheduler)."""
    stride = len(model.sigmas) / n
    return _append_zero(model.sigmas[[-(1 + int(i * stride)) for i in range(n)]])


def ddim_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas, rho: float | None = None
) -> torch.Tensor:
    """The training sigmas at timesteps 1, 1+c, 1+2c... (c = 1000 // n), highest first (A1111 ddim_scheduler).

    Like A1111's, it starts below sigma_max and can hold one sigma more than n when c does not divide 999.
    """
    stride = max(len(model.sigmas) // n, 1)
    return _append_zero(model.sigmas[1::stride].flip(0))


def _beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean; use I_x(a,b) = 1 - I_1-x(b,a)
        return 1.0 - _beta_cdf(1.0 - x, b, a)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def beta_ppf(q: float, a: float, b: float) -> float:
    """The Beta(a, b) quantile of q (scipy.stats.beta.ppf, which A1111 uses), by bisection on the CDF."""
    low, high = 0.0, 1.0
    if q <= 0.0 or q >= 1.0:
        return low if q <= 0.0 else high
    for _ in range(200):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        low, high = (mid, high) if _beta_cdf(mid, a, b) < q else (low, mid)
    return (low + high) / 2


BETA_SCHEDULE_ALPHA = 0.6  # A1111's beta_dist_alpha / beta_dist_beta defaults
BETA_SCHEDULE_BETA = 0.6


def beta_sigmas(
    n: int,
    sigma_min: float,
    sigma_max: float,
    model: DiscreteSigmas | None = None,
    rho: float | None = None,
    alpha: float = BETA_SCHEDULE_ALPHA,
    beta: float = BETA_SCHEDULE_BETA,
) -> torch.Tensor:
    """Beta(alpha, beta) quantiles of a falling ramp, mapped linearly onto [sigma_min, sigma_max].

    "Beta Sampling is All You Need" (Lee et al. 2024, arXiv:2407.12173) as A1111's beta_scheduler
    does it: linear in sigma, not in timestep as ComfyUI's.
    """
    ramp = np.linspace(0, 1, n)
    quantiles = [beta_ppf(1.0 - float(r), alpha, beta) for r in ramp]
    return _append_zero(torch.tensor([sigma_min + q * (sigma_max - sigma_min) for q in quantiles]))


def kl_optimal_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas | None = None, rho: float | None = None
) -> torch.Tensor:
    """Sigmas evenly spaced in arctan(sigma) (Sabour et al. 2024, "Align Your Steps" appendix, KL-optimal).

    As in A1111's kl_optimal, n+1 sigmas from sigma_max down to sigma_min and no final 0: the last
    step ends at the model's smallest sigma.
    """
    atan_min, atan_max = math.atan(sigma_min), math.atan(sigma_max)
    ramp = torch.arange(n + 1, dtype=torch.float64) / n
    return torch.tan(ramp * atan_min + (1.0 - ramp) * atan_max).float()


# NVIDIA's optimized 10-step schedules (https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html),
# as A1111 tabulates them in sd_schedulers.get_align_your_steps_sigmas.
AYS_SIGMAS_SD1 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SIGMAS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def align_your_steps_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas, rho: float | None = None
) -> torch.Tensor:
    """Align Your Steps (Sabour et al. 2024): the model family's table, log-linearly resampled to n sigmas."""
    table = np.array(AYS_SIGMAS_SDXL if model.is_sdxl else AYS_SIGMAS_SD1, dtype=np.float64)
    if n != len(table):
        # Interpolate log sigma over an evenly spaced [0, 1] parameter, lowest sigma first as np.interp needs.
        log_rising = np.log(table[::-1])
        table = np.exp(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(table)), log_rising))[::-1]
    return _append_zero(torch.tensor(table.copy(), dtype=torch.float32))


def karras_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas | None = None, rho: float | None = None
) -> torch.Tensor:
    """Karras et al. 2022 eq. 5: sigmas evenly spaced in sigma^(1/rho), rho = 7."""
    rho = 7.0 if rho is None else rho
    ramp = torch.linspace(0, 1, n)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def exponential_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas | None = None, rho: float | None = None
) -> torch.Tensor:
    """Sigmas evenly spaced in log sigma."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential_sigmas(
    n: int, sigma_min: float, sigma_max: float, model: DiscreteSigmas | None = None, rho: float | None = None
) -> torch.Tensor:
    """Log sigma follows a polynomial ramp of power rho (k-diffusion get_sigmas_polyexponential, rho = 1)."""
    rho = 1.0 if rho is None else rho
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


ScheduleFunction = Callable[[int, float, float, DiscreteSigmas, float | None], torch.Tensor]
"""`schedule(n, sigma_min, sigma_max, model, rho) -> n sigmas plus a final 0` (rho None = the function's default)."""


@dataclass(frozen=True)
class ScheduleType:
    """One row of the schedule-type table (A1111's `Scheduler`)."""

    name: str  # A1111's key, e.g. "karras"
    label: str  # what users see and infotext writes, e.g. "Karras"
    function: ScheduleFunction | None  # None = "Automatic" (the sampler's default)
    aliases: tuple[str, ...] = ()
    default_rho: float | None = None
    # Flags for diffusers timestep samplers that support the schedule natively.
    diffusers_config: dict[str, Any] = field(default_factory=dict)


SCHEDULE_TYPES: tuple[ScheduleType, ...] = (
    ScheduleType("automatic", "Automatic", None),
    ScheduleType("uniform", "Uniform", uniform_sigmas),
    ScheduleType("karras", "Karras", karras_sigmas, default_rho=7.0, diffusers_config={"use_karras_sigmas": True}),
    ScheduleType("exponential", "Exponential", exponential_sigmas, diffusers_config={"use_exponential_sigmas": True}),
    ScheduleType("polyexponential", "Polyexponential", polyexponential_sigmas, default_rho=1.0),
    ScheduleType(
        "sgm_uniform",
        "SGM Uniform",
        sgm_uniform_sigmas,
        aliases=("SGMUniform",),
        diffusers_config={"timestep_spacing": "trailing"},
    ),
    # A1111 v1.10 additions, in its order. Timestep samplers (DDIM, PLMS, UniPC) ignore these, as in A1111.
    ScheduleType("kl_optimal", "KL Optimal", kl_optimal_sigmas),
    ScheduleType("align_your_steps", "Align Your Steps", align_your_steps_sigmas),
    ScheduleType("simple", "Simple", simple_sigmas),
    ScheduleType("normal", "Normal", normal_sigmas),
    ScheduleType("ddim", "DDIM", ddim_sigmas),
    ScheduleType("beta", "Beta", beta_sigmas),
)


# --------------------------------------------------------------------------------------
# Sigma samplers (k-diffusion algorithms, written against the papers)
# --------------------------------------------------------------------------------------


@dataclass
class SamplerOptions:
    """Per-run knobs; defaults are A1111's (eta 1 for ancestral samplers, churn off)."""

    eta: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0
    s_noise: float = 1.0


class SigmaSampler(Protocol):
    """Every sigma sampler's signature.

    `sample(model, x, sigmas, noise, callback, opts)` returns the latent at the last sigma.
    """

    def __call__(
        self,
        model: Denoiser,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        noise: NoiseSource,
        callback: StepCallback | None,
        opts: SamplerOptions,
    ) -> torch.Tensor: ...


def _ones(x: torch.Tensor) -> torch.Tensor:
    return x.new_ones([x.shape[0]])


def _churned_derivative(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    i: int,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step i's first evaluation with Karras et al. 2022's churn: (x raised to sigma_hat, sigma_hat, dx/dsigma)."""
    gamma = _churn(sigmas[i], i, len(sigmas) - 1, opts.s_churn, opts.s_tmin, opts.s_tmax)
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + noise(sigmas[i], sigmas[i + 1]) * opts.s_noise * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    denoised = model(x, sigma_hat * _ones(x))
    _report(callback, i, x, sigmas[i], denoised)
    return x, sigma_hat, _to_d(x, sigma_hat, denoised)


def sample_euler(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 with churn)."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat, d = _churned_derivative(model, x, sigmas, i, noise, callback, opts)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


def sample_euler_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """Euler steps down to sigma_down, then fresh noise up to the next sigma."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], opts.eta)
        _report(callback, i, x, sigmas[i], denoised)
        x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * opts.s_noise * sigma_up
    return x


def sample_heun(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2)."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat, d = _churned_derivative(model, x, sigmas, i, noise, callback, opts)
        x = _heun_step(model, x, d, sigma_hat, sigmas[i + 1])
    return x


def _heun_step(
    model: Denoiser, x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """From sigma (where dx/dsigma is d) to sigma_next: Heun's trapezoid, or Euler when sigma_next is 0."""
    dt = sigma_next - sigma
    if sigma_next == 0:
        return x + d * dt
    x_2 = x + d * dt
    d_2 = _to_d(x_2, sigma_next, model(x_2, sigma_next * _ones(x)))
    return x + (d + d_2) / 2 * dt


def sample_dpm_2(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """DPM-Solver-2 style midpoint step in log sigma (k-diffusion sample_dpm_2)."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat, d = _churned_derivative(model, x, sigmas, i, noise, callback, opts)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = _to_d(x_2, sigma_mid, model(x_2, sigma_mid * _ones(x)))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


def sample_dpm_2_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """Ancestral DPM2: midpoint step down to sigma_down, then fresh noise."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], opts.eta)
        _report(callback, i, x, sigmas[i], denoised)
        d = _to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = _to_d(x_2, sigma_mid, model(x_2, sigma_mid * _ones(x)))
            x = x + d_2 * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * opts.s_noise * sigma_up
    return x


def _lms_coefficient(order: int, t: npt.NDArray[np.float64], i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the j-th Lagrange basis polynomial (exact, no quadrature)."""
    poly = np.poly1d([1.0])
    for k in range(order):
        if k == j:
            continue
        poly = poly * np.poly1d([1.0, -t[i - k]]) / (t[i - j] - t[i - k])
    antiderivative = np.polyint(poly)
    return float(antiderivative(t[i + 1]) - antiderivative(t[i]))


def sample_lms(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep method over the last `order` derivatives (k-diffusion sample_lms)."""
    sigmas_np = sigmas.detach().cpu().double().numpy()
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        ds.append(_to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        _report(callback, i, x, sigmas[i], denoised)
        cur_order = min(i + 1, order)
        coeffs = [_lms_coefficient(cur_order, sigmas_np, i, j) for j in range(cur_order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


def sample_dpmpp_2s_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """DPM-Solver++(2S) with ancestral noise (Lu et al. 2022, single-step second order)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], opts.eta)
        _report(callback, i, x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t_of(sigmas[i]), _t_of(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma_of(s) / _sigma_of(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, _sigma_of(s) * _ones(x))
            x = (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * opts.s_noise * sigma_up
    return x


def sample_dpmpp_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
    r: float = 0.5,
) -> torch.Tensor:
    """DPM-Solver++ (stochastic, second order, midpoint r = 1/2) (k-diffusion sample_dpmpp_sde)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t_of(sigmas[i]), _t_of(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        sd, su = _ancestral_step(_sigma_of(t), _sigma_of(s), opts.eta)
        s_ = _t_of(sd)
        x_2 = (_sigma_of(s_) / _sigma_of(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise(_sigma_of(t), _sigma_of(s)) * opts.s_noise * su
        denoised_2 = model(x_2, _sigma_of(s) * _ones(x))
        sd, su = _ancestral_step(_sigma_of(t), _sigma_of(t_next), opts.eta)
        t_next_ = _t_of(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma_of(t_next_) / _sigma_of(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise(_sigma_of(t), _sigma_of(t_next)) * opts.s_noise * su
    return x


def sample_dpmpp_2m(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in data prediction (Lu et al. 2022, Alg. 2)."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        _report(callback, i, x, sigmas[i], denoised)
        t, t_next = _t_of(sigmas[i]), _t_of(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t_of(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def sample_dpmpp_2m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, midpoint variant (k-diffusion sample_dpmpp_2m_sde)."""
    return _dpmpp_2m_sde(model, x, sigmas, noise, callback, opts, heun=False)


def sample_dpmpp_2m_sde_heun(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, Heun variant (k-diffusion sample_dpmpp_2m_sde, solver_type="heun")."""
    return _dpmpp_2m_sde(model, x, sigmas, noise, callback, opts, heun=True)


def _dpmpp_2m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
    heun: bool,
) -> torch.Tensor:
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = opts.eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None and h_last is not None:  # h_last: set with it on every step above sigma 0
                r = h_last / h
                # The second-order correction's weight: phi_1 / 2 (midpoint) or 1 - phi_1 / (h + eta h) (Heun),
                # phi_1 = 1 - exp(-(h + eta h)).
                phi_1 = (-h - eta_h).expm1().neg()
                weight = 1 - phi_1 / (h + eta_h) if heun else 0.5 * phi_1
                x = x + weight * (1 / r) * (denoised - old_denoised)
            if opts.eta:
                x = (
                    x
                    + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * opts.s_noise
                )
            h_last = h
        old_denoised = denoised
    return x


def sample_dpmpp_3m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion sample_dpmpp_3m_sde)."""
    denoised_1 = denoised_2 = None
    h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (opts.eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if (
                h_1 is not None and h_2 is not None and denoised_1 is not None and denoised_2 is not None
            ):  # h_k and denoised_k are set together
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None and denoised_1 is not None:
                r = h_1 / h
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * (denoised - denoised_1) / r
            if opts.eta:
                x = (
                    x
                    + noise(sigmas[i], sigmas[i + 1])
                    * sigmas[i + 1]
                    * (-2 * h * opts.eta).expm1().neg().sqrt()
                    * opts.s_noise
                )
            denoised_1, denoised_2 = denoised, denoised_1
            h_1, h_2 = h, h_1
    return x


def sample_lcm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """Latent Consistency Model sampling: jump to x0, re-noise to the next sigma (Luo et al. 2023)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x))
        _report(callback, i, x, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise(sigmas[i], sigmas[i + 1])
    return x


def _restart_plan(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (from, to) sigma pairs Restart steps through (A1111 sd_samplers_extra.restart_sampler).

    From 20 steps on, the schedule is replaced by a Karras one with fewer steps and the freed steps
    go to restart segments: 1 restart of 9 steps (2 of steps // 4 from 36 steps on), each going back
    up from the sigma nearest 0.1 to the one nearest 2 and down again on a Karras schedule.
    """
    steps = len(sigmas) - 1
    restart_at: dict[int, tuple[int, int, float]] = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras_sigmas(steps - restart_steps * restart_times, float(sigmas[-2]), float(sigmas[0])).to(sigmas)
        restart_at = {int((sigmas - 0.1).abs().argmin()): (restart_steps + 1, restart_times, 2.0)}
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_at:
            n, times, restart_max = restart_at[i + 1]
            low, high = i + 1, int((sigmas - restart_max).abs().argmin())
            if high < low:
                segment = karras_sigmas(n, float(sigmas[low]), float(sigmas[high])).to(sigmas)[:-1]
                plan += list(zip(segment[:-1], segment[1:])) * times
    return plan


def sample_restart(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
) -> torch.Tensor:
    """Restart sampling (Xu et al. 2023): Heun steps, with fresh noise wherever the plan goes back up in sigma."""
    last_sigma: torch.Tensor | None = None
    for i, (sigma, sigma_next) in enumerate(_restart_plan(sigmas)):
        if last_sigma is not None and last_sigma < sigma:
            x = x + noise(last_sigma, sigma) * opts.s_noise * (sigma**2 - last_sigma**2) ** 0.5
        denoised = model(x, sigma * _ones(x))
        _report(callback, i, x, sigma, denoised)
        x = _heun_step(model, x, _to_d(x, sigma, denoised), sigma, sigma_next)
        last_sigma = sigma_next
    return x


# DPM-Solver in its original eps / t = -log(sigma) form, for DPM fast and DPM adaptive
# (Lu et al. 2022, Algorithms 1 and 2 plus the adaptive step-size of section 4.3).

_EpsCache = dict[str, torch.Tensor]
"""Model evaluations (eps) of one step by name ("eps", "eps_r1"...), so step_1/2/3 share them."""


class _DPMSolver:
    def __init__(self, model: Denoiser, callback: StepCallback | None) -> None:
        self.model = model
        self.callback = callback
        self.evaluations = 0

    def eps(self, cache: _EpsCache, key: str, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, _EpsCache]:
        if key in cache:
            return cache[key], cache
        sigma = _sigma_of(t) * _ones(x)
        eps = (x - self.model(x, sigma)) / _sigma_of(t)
        self.evaluations += 1
        return eps, {key: eps, **cache}

    def step_1(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: _EpsCache
    ) -> tuple[torch.Tensor, _EpsCache]:
        eps, cache = self.eps(cache, "eps", x, t)
        h = t_next - t
        return x - _sigma_of(t_next) * h.expm1() * eps, cache

    def step_2(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, r1: float = 0.5, cache: _EpsCache | None = None
    ) -> tuple[torch.Tensor, _EpsCache]:
        eps, cache = self.eps(cache or {}, "eps", x, t)
        h = t_next - t
        s1 = t + r1 * h
        u1 = x - _sigma_of(s1) * (r1 * h).expm1() * eps
        eps_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        x_2 = x - _sigma_of(t_next) * h.expm1() * eps - _sigma_of(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        return x_2, cache

    def step_3(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        r1: float = 1 / 3,
        r2: float = 2 / 3,
        cache: _EpsCache | None = None,
    ) -> tuple[torch.Tensor, _EpsCache]:
        eps, cache = self.eps(cache or {}, "eps", x, t)
        h = t_next - t
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma_of(s1) * (r1 * h).expm1() * eps
        eps_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - _sigma_of(s2) * (r2 * h).expm1() * eps
            - _sigma_of(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2, cache = self.eps(cache, "eps_r2", u2, s2)
        x_3 = x - _sigma_of(t_next) * h.expm1() * eps - _sigma_of(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        return x_3, cache

    def noise_split(
        self, t: torch.Tensor, t_next: torch.Tensor, eta: float
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Where the deterministic part of a step ends, and the noise added after it."""
        if not eta:
            return t_next, 0.0
        sd, _ = _ancestral_step(_sigma_of(t), _sigma_of(t_next), eta)
        t_next_ = torch.minimum(t_next, _t_of(sd))
        su = (_sigma_of(t_next) ** 2 - _sigma_of(t_next_) ** 2) ** 0.5
        return t_next_, su


def sample_dpm_fast(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
    steps: int | None = None,
) -> torch.Tensor:
    """DPM-Solver 'fast': orders 3,3,...,2,1 over `steps` evaluations, uniform in log sigma."""
    sigma_max, sigma_min = sigmas[0], sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]
    nfe = steps if steps is not None else len(sigmas) - 1
    solver = _DPMSolver(model, callback)
    t_start, t_end = _t_of(sigma_max), _t_of(sigma_min)
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        cache: _EpsCache = {}
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = solver.noise_split(t, t_next, opts.eta)
        eps, cache = solver.eps(cache, "eps", x, t)
        _report(callback, i, x, _sigma_of(t), x - _sigma_of(t) * eps)
        if order == 1:
            x, cache = solver.step_1(x, t, t_next_, cache)
        elif order == 2:
            x, cache = solver.step_2(x, t, t_next_, cache=cache)
        else:
            x, cache = solver.step_3(x, t, t_next_, cache=cache)
        if opts.eta:
            x = x + su * opts.s_noise * noise(_sigma_of(t), _sigma_of(t_next))
    return x


class _PIDStepSize:
    """PID step-size controller (Lu et al. 2022 §4.3, as in k-diffusion's PIDStepSizeController)."""

    def __init__(
        self,
        h: float,
        pcoeff: float,
        icoeff: float,
        dcoeff: float,
        order: float = 1,
        accept_safety: float = 0.81,
        eps: float = 1e-8,
    ) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: torch.Tensor | float) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


# A random or broken model can make the adaptive solver shrink its step forever; this cap
# (far above the ~50-150 evaluations it takes on real models) keeps a job from hanging.
DPM_ADAPTIVE_MAX_EVALUATIONS = 1000


def sample_dpm_adaptive(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    opts: SamplerOptions,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
) -> torch.Tensor:
    """DPM-Solver-12/23 with adaptive step size; the step count is chosen by the error."""
    sigma_max, sigma_min = sigmas[0], sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]
    solver = _DPMSolver(model, callback)
    t_start, t_end = float(_t_of(sigma_max)), float(_t_of(sigma_min))
    atol_t = torch.tensor(atol, dtype=x.dtype, device=x.device)
    rtol_t = torch.tensor(rtol, dtype=x.dtype, device=x.device)
    s = torch.tensor(t_start, device=x.device)
    x_prev = x
    pid = _PIDStepSize(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if opts.eta else order, accept_safety)
    step = 0
    while float(s) < t_end - 1e-5 and solver.evaluations < DPM_ADAPTIVE_MAX_EVALUATIONS:
        cache: _EpsCache = {}
        t = torch.tensor(min(t_end, float(s) + pid.h), device=x.device)
        t_, su = solver.noise_split(s, t, opts.eta)
        eps, cache = solver.eps(cache, "eps", x, s)
        denoised = x - _sigma_of(s) * eps
        if order == 2:
            x_low, cache = solver.step_1(x, s, t_, cache)
            x_high, cache = solver.step_2(x, s, t_, cache=cache)
        else:
            x_low, cache = solver.step_2(x, s, t_, r1=1 / 3, cache=cache)
            x_high, cache = solver.step_3(x, s, t_, cache=cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high
            if opts.eta:
                x = x + su * opts.s_noise * noise(_sigma_of(s), _sigma_of(t))
            s = t
        _report(callback, step, x, _sigma_of(s), denoised)
        step += 1
    return x


# --------------------------------------------------------------------------------------
# Timestep samplers: diffusers scheduler classes driven over integer timesteps
# --------------------------------------------------------------------------------------


class SchedulerStepOutput(Protocol):
    """What a diffusers scheduler's `step(..., return_dict=True)` returns (some add `pred_original_sample`)."""

    @property
    def prev_sample(self) -> torch.Tensor: ...


class TimestepScheduler(Protocol):
    """The part of a diffusers scheduler (DDIMScheduler, PNDMScheduler...) the timestep-sampler loop drives."""

    @property
    def timesteps(self) -> torch.Tensor: ...

    @property
    def init_noise_sigma(self) -> float | torch.Tensor: ...

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None: ...

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor: ...

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor: ...

    def step(
        self, model_output: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor, *args: Any, **kwargs: Any
    ) -> SchedulerStepOutput: ...


# CFG++ (Chung et al. 2024, "Manifold-constrained Classifier Free Guidance") guides with lambda in [0, 1];
# A1111 maps its CFG scale onto it by dividing by 12.5 (sd_samplers_timesteps_impl.ddim_cfgpp).
CFG_PP_SCALE_MULTIPLIER = 1 / 12.5


def ddim_cfgpp_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    eps_uncond: torch.Tensor,
    alpha: float,
    alpha_prev: float,
    eta: float,
    noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step with CFG++: (x at alpha_prev, predicted x0).

    x0 comes from the guided eps (guidance scale already multiplied by CFG_PP_SCALE_MULTIPLIER) as
    in DDIM; the step back towards alpha_prev's noise level follows the unconditional eps instead
    of the guided one. `alpha`s are the cumulative alphas of the two timesteps; eta > 0 adds
    `noise` (unit normal) as DDIM does (A1111 sd_samplers_timesteps_impl.ddim_cfgpp).
    """
    pred_x0 = (x - (1 - alpha) ** 0.5 * eps) / alpha**0.5
    sigma = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)) ** 0.5
    x_prev = alpha_prev**0.5 * pred_x0 + (1 - alpha_prev - sigma**2) ** 0.5 * eps_uncond
    if sigma > 0 and noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev, pred_x0


def make_diffusers_scheduler(
    class_name: str, model_scheduler_config: dict[str, Any], overrides: dict[str, Any]
) -> TimestepScheduler:
    """Instantiate a diffusers scheduler from the model's config plus a sampler row's overrides."""
    import diffusers

    cls = getattr(diffusers, class_name)
    base = {k: v for k, v in model_scheduler_config.items() if not k.startswith("_")}
    accepted = set(cls._get_init_keys(cls)) if hasattr(cls, "_get_init_keys") else None
    config = {**base, **overrides}
    if accepted is not None:
        config = {k: v for k, v in config.items() if k in accepted}
    scheduler: TimestepScheduler = cls.from_config(config)  # cls is looked up by name, so mypy sees Any
    return scheduler


# --------------------------------------------------------------------------------------
# The sampler table (A1111 sd_samplers_kdiffusion.samplers_k_diffusion + timesteps samplers)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerDef:
    """One row of the sampler table."""

    name: str
    aliases: tuple[str, ...]
    function: SigmaSampler | None = None  # sigma samplers
    diffusers_class: str | None = None  # timestep samplers
    diffusers_config: dict[str, Any] = field(default_factory=dict)
    # Nearest diffusers scheduler (class, config) for reference, tests and the benchmark.
    diffusers_equivalent: tuple[str, dict[str, Any]] | None = None
    default_schedule: str = "uniform"  # what "Automatic" means for this sampler (A1111 'scheduler' option)
    second_order: bool = False  # two model evaluations per step
    discard_next_to_last_sigma: bool = False
    uses_eta: bool = False  # takes eta; A1111 writes "Eta" and uses ENSD for these
    default_eta: float = 1.0
    uses_noise: bool = False  # draws fresh noise during sampling (ENSD applies)
    takes_step_count: bool = False  # DPM fast/adaptive: use sigma range, not a schedule
    # The SamplerOptions noise knobs the algorithm reads (A1111 sampler_extra_params); the infotext names them.
    sigma_options: tuple[str, ...] = ()
    cfg_pp: bool = False  # DDIM CFG++: guidance scale / 12.5, steps along the unconditional prediction

    @property
    def is_timestep_sampler(self) -> bool:
        return self.diffusers_class is not None

    def total_model_evaluations(self, steps: int) -> int:
        """Denoiser calls per image, A1111's `total_steps` (prompt schedules are over these)."""
        return steps * 2 if self.second_order else steps


CHURN_OPTIONS = ("s_churn", "s_tmin", "s_tmax", "s_noise")  # Karras et al. 2022 stochastic sampling
NOISE_OPTIONS = ("s_noise",)  # samplers that add fresh noise each step


def _sig(
    name: str,
    aliases: list[str],
    fn: SigmaSampler,
    equivalent: tuple[str, dict[str, Any]] | None = None,
    **options: Any,
) -> SamplerDef:
    return SamplerDef(name=name, aliases=tuple(aliases), function=fn, diffusers_equivalent=equivalent, **options)


# A1111/CompVis DDIM: timesteps 1, 1+c, 1+2c, ... ("leading" + offset 1), alpha_prev of the
# first step is alphas_cumprod[0].
_DDIM_CONFIG: dict[str, Any] = {
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
}

SAMPLERS: tuple[SamplerDef, ...] = (
    _sig(
        "DPM++ 2M",
        ["k_dpmpp_2m"],
        sample_dpmpp_2m,
        ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        default_schedule="karras",
    ),
    _sig(
        "DPM++ SDE",
        ["k_dpmpp_sde"],
        sample_dpmpp_sde,
        ("DPMSolverSDEScheduler", {}),
        default_schedule="karras",
        second_order=True,
        uses_eta=True,
        uses_noise=True,
        sigma_options=NOISE_OPTIONS,
    ),
    _sig(
        "DPM++ 2M SDE",
        ["k_dpmpp_2m_sde"],
        sample_dpmpp_2m_sde,
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
        default_schedule="exponential",
        uses_eta=True,
        uses_noise=True,
        sigma_options=NOISE_OPTIONS,
    ),
    _sig(
        "DPM++ 2M SDE Heun",
        ["k_dpmpp_2m_sde_heun"],
        sample_dpmpp_2m_sde_heun,
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
        default_schedule="exponential",
        uses_eta=True,
        uses_noise=True,
        sigma_options=NOISE_OPTIONS,
    ),
    _sig(
        "DPM++ 3M SDE",
        ["k_dpmpp_3m_sde"],
        sample_dpmpp_3m_sde,
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
        default_schedule="exponential",
        discard_next_to_last_sigma=True,
        uses_eta=True,
        uses_noise=True,
        sigma_options=NOISE_OPTIONS,
    ),
    _sig(
        "DPM++ 2S a",
        ["k_dpmpp_2s_a"],
        sample_dpmpp_2s_ancestral,
        ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        default_schedule="karras",
        second_order=True,
        uses_eta=True,
        uses_noise=True,
        sigma_options=NOISE_OPTIONS,
    ),
    _sig(
        "Euler a",
        ["k_euler_a", "k_euler_ancestral"],
        sample_euler_ancestral,
        ("EulerAncestralDiscreteScheduler", {}),
        uses_eta=True,
        uses_noise=True,
        sigma_options=NOISE_OPTIONS,
    ),
    _sig("Euler", ["k_euler"], sample_euler, ("EulerDiscreteScheduler", {}), sigma_options=CHURN_OPTIONS),
    _sig("LMS", ["k_lms"], sample_lms, ("LMSDiscreteScheduler", {})),
    _sig(
        "Heun", ["k_heun"], sample_heun, ("HeunDiscreteScheduler", {}), second_order=True, sigma_options=CHURN_OPTIONS
    ),
    _sig(
        "DPM2",
        ["k_dpm_2"],
        sample_dpm_2,
        ("KDPM2DiscreteScheduler", {}),
        discard_next_to_last_sigma=True,
        second_order=True,
        sigma_options=CHURN_OPTIONS,
    ),
    _sig(
        "DPM2 a",
        ["k_dpm_2_a"],
        sample_dpm_2_ancestral,
        ("KDPM2AncestralDiscreteScheduler", {}),
        discard_next_to_last_sigma=True,
        second_order=True,
        uses_eta=True,
        uses_noise=True,
        sigma_options=NOISE_OPTIONS,
    ),
    _sig(
        "DPM fast",
        ["k_dpm_fast"],
        sample_dpm_fast,
        None,
        uses_eta=True,
        uses_noise=True,
        takes_step_count=True,
        sigma_options=NOISE_OPTIONS,
    ),
    _sig(
        "DPM adaptive",
        ["k_dpm_ad"],
        sample_dpm_adaptive,
        None,
        uses_eta=True,
        uses_noise=True,
        takes_step_count=True,
        sigma_options=NOISE_OPTIONS,
    ),
    # A1111 sd_samplers_extra.restart_sampler; two model evaluations per step, so "second order" as there.
    _sig("Restart", ["restart"], sample_restart, None, default_schedule="karras", second_order=True, uses_noise=True),
    _sig("LCM", ["k_lcm"], sample_lcm, ("LCMScheduler", {}), uses_noise=True),
    SamplerDef(
        name="DDIM",
        aliases=("ddim",),
        diffusers_class="DDIMScheduler",
        diffusers_config=dict(_DDIM_CONFIG),
        diffusers_equivalent=("DDIMScheduler", {}),
        uses_eta=True,
        default_eta=0.0,
    ),
    # DDIM's timesteps and noise levels (its diffusers scheduler), its step written out in ddim_cfgpp_step.
    SamplerDef(
        name="DDIM CFG++",
        aliases=("ddim_cfgpp",),
        diffusers_class="DDIMScheduler",
        diffusers_config=dict(_DDIM_CONFIG),
        uses_eta=True,
        default_eta=0.0,
        cfg_pp=True,
    ),
    SamplerDef(
        name="PLMS",
        aliases=("plms",),
        diffusers_class="PNDMScheduler",
        diffusers_config={
            "skip_prk_steps": True,
            "timestep_spacing": "leading",
            "steps_offset": 1,
            "set_alpha_to_one": False,
        },
        diffusers_equivalent=("PNDMScheduler", {"skip_prk_steps": True}),
    ),
    SamplerDef(
        name="UniPC",
        aliases=("unipc",),
        diffusers_class="UniPCMultistepScheduler",
        # A1111: order 3, lower order at the end. Variant bh2: diffusers' bh1 yields NaN at the final zero sigma.
        diffusers_config={
            "solver_order": 3,
            "solver_type": "bh2",
            "lower_order_final": True,
            "predict_x0": True,
            "timestep_spacing": "linspace",
        },
        diffusers_equivalent=("UniPCMultistepScheduler", {}),
    ),
)


def _key(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").split())


def find_sampler(name: str) -> SamplerDef | None:
    """The sampler row for a name or alias (case-insensitive), or None."""
    wanted = _key(name)
    for row in SAMPLERS:
        if _key(row.name) == wanted or any(_key(a) == wanted for a in row.aliases):
            return row
    return None


def find_schedule_type(name: str | None) -> ScheduleType | None:
    """The schedule-type row for a label, key or alias (case-insensitive); None/"" = Automatic."""
    if not name:
        return SCHEDULE_TYPES[0]
    wanted = _key(name)
    for row in SCHEDULE_TYPES:
        if wanted in (_key(row.name), _key(row.label), *(_key(a) for a in row.aliases)):
            return row
    return None


def resolve_sampler_and_schedule(sampler_name: str, scheduler: str | None) -> tuple[SamplerDef, ScheduleType] | None:
    """Split old combined names ("DPM++ 2M Karras") into sampler + schedule type (A1111 get_sampler_and_scheduler)."""
    sampler = find_sampler(sampler_name)
    schedule = find_schedule_type(scheduler)
    if sampler is not None:
        return (sampler, schedule) if schedule is not None else None
    for row in SCHEDULE_TYPES[1:]:
        for label in (row.label, *row.aliases):
            if sampler_name.strip().lower().endswith(" " + label.lower()):
                base = find_sampler(sampler_name.strip()[: -len(label) - 1])
                if base is not None:
                    explicit = schedule if schedule is not None and schedule.name != "automatic" else row
                    return base, explicit
    return None


def effective_schedule(sampler: SamplerDef, schedule: ScheduleType) -> ScheduleType:
    """What "Automatic" resolves to for a sampler (its A1111 default)."""
    if schedule.function is not None:
        return schedule
    return find_schedule_type(sampler.default_schedule) or SCHEDULE_TYPES[1]


def infotext_schedule_label(sampler: SamplerDef, schedule: ScheduleType) -> str:
    """The "Schedule type" A1111 writes: a sigma sampler with its own default (DPM++ 2M: Karras) names
    the schedule "Automatic" resolved to; otherwise the requested label ("Automatic" stays as is)."""
    if (
        schedule.function is None
        and sampler.function is not None
        and not sampler.takes_step_count
        and sampler.default_schedule != "uniform"
    ):
        return effective_schedule(sampler, schedule).label
    return schedule.label


def sigmas_for(sampler: SamplerDef, schedule: ScheduleType, steps: int, model: DiscreteSigmas) -> torch.Tensor:
    """The sigma schedule a sigma sampler runs for `steps` steps (A1111 KDiffusionSampler.get_sigmas)."""
    chosen = effective_schedule(sampler, schedule)
    discard = sampler.discard_next_to_last_sigma
    n = steps + 1 if discard else steps
    assert chosen.function is not None  # effective_schedule resolves "Automatic" to a schedule with a function
    sigmas = chosen.function(n, model.sigma_min, model.sigma_max, model, chosen.default_rho)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.float()


def sampler_names() -> list[str]:
    """Every sampler name, in table order."""
    return [row.name for row in SAMPLERS]


def schedule_type_labels() -> list[str]:
    """Every schedule-type label, in table order."""
    return [row.label for row in SCHEDULE_TYPES]
