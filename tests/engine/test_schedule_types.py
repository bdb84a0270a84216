"""A1111 v1.10's added schedule types against references computed here from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import SCHEDULER_CONFIG

from sdstudio.engine.samplers import (
    AYS_SIGMAS_SD1,
    AYS_SIGMAS_SDXL,
    DiscreteSigmas,
    beta_ppf,
    find_sampler,
    find_schedule_type,
    sigmas_for,
)

EULER = find_sampler("Euler")


def _training_sigmas() -> np.ndarray:
    """SD's 1000 noise levels: scaled-linear betas 0.00085..0.012, sigma = sqrt((1 - abar) / abar)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    return np.sqrt((1 - alphas_cumprod) / alphas_cumprod)


TRAINING = _training_sigmas()
DISCRETE = DiscreteSigmas.from_scheduler_config(SCHEDULER_CONFIG)


def _schedule(label: str, steps: int, discrete: DiscreteSigmas = DISCRETE) -> np.ndarray:
    return sigmas_for(EULER, find_schedule_type(label), steps, discrete).double().numpy()


def test_simple_normal_and_ddim_pick_the_training_sigmas_a1111_picks():
    zero = [0.0]
    # Simple: every 250th level from the top; Normal: timesteps 999, 666, 333, 0; DDIM: timesteps 1, 251... reversed.
    assert np.allclose(_schedule("Simple", 4), [*TRAINING[[999, 749, 499, 249]], *zero], rtol=1e-5)
    assert np.allclose(_schedule("Normal", 4), [*TRAINING[[999, 666, 333, 0]], *zero], rtol=1e-5)
    assert np.allclose(_schedule("DDIM", 4), [*TRAINING[[751, 501, 251, 1]], *zero], rtol=1e-5)
    # 999 / (1000 // 7) is not whole: A1111's DDIM schedule then has a step more than asked for.
    assert np.allclose(_schedule("DDIM", 7), [*TRAINING[list(range(1, 1000, 142))[::-1]], *zero], rtol=1e-5)


def test_kl_optimal_is_even_in_arctan_from_sigma_max_to_sigma_min():
    s = _schedule("KL Optimal", 5)
    assert len(s) == 6  # A1111's: n + 1 sigmas, the last the model's smallest rather than 0
    assert s[0] == pytest.approx(TRAINING[-1], rel=1e-5) and s[-1] == pytest.approx(TRAINING[0], rel=1e-5)
    steps = np.diff(np.arctan(s))
    assert np.allclose(steps, steps[0], rtol=1e-4)


@pytest.mark.parametrize("is_sdxl, table", [(False, AYS_SIGMAS_SD1), (True, AYS_SIGMAS_SDXL)])
def test_align_your_steps_uses_the_family_table_and_interpolates_log_linearly(is_sdxl, table):
    discrete = DiscreteSigmas.from_scheduler_config(SCHEDULER_CONFIG, is_sdxl=is_sdxl)
    assert np.allclose(_schedule("Align Your Steps", 11, discrete), [*table, 0.0], rtol=1e-6)
    assert table[0] == 14.615 and table[-1] == 0.029 and table[1] == (6.315 if is_sdxl else 6.475)
    # 21 sigmas put every table entry at an even index and the geometric mean of neighbours between them.
    doubled = _schedule("Align Your Steps", 21, discrete)
    assert len(doubled) == 22 and doubled[-1] == 0
    assert np.allclose(doubled[0:21:2], table, rtol=1e-5)
    assert np.allclose(doubled[1:21:2], np.sqrt(np.array(table[:-1]) * np.array(table[1:])), rtol=1e-5)


def test_beta_quantiles_match_closed_forms():
    for q in (0.05, 0.3, 0.5, 0.77, 0.99):
        assert beta_ppf(q, 0.5, 0.5) == pytest.approx(math.sin(math.pi * q / 2) ** 2, abs=1e-12)  # arcsine law
        assert beta_ppf(q, 2.0, 1.0) == pytest.approx(math.sqrt(q), abs=1e-12)  # density 2x
        assert beta_ppf(q, 1.0, 1.0) == pytest.approx(q, abs=1e-12)  # uniform
    assert (beta_ppf(0.0, 0.6, 0.6), beta_ppf(1.0, 0.6, 0.6)) == (0.0, 1.0)


def _beta_cdf_by_quadrature(x: float, a: float, b: float) -> float:
    """I_x(a, b) for x <= 1/2 by Simpson's rule; t = s^(1/a) removes the integrand's singularity at 0."""
    s = np.linspace(0.0, x**a, 20001)
    f = (1 - s ** (1 / a)) ** (b - 1) / a
    h = s[1] - s[0]
    integral = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    return float(integral / math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))


def test_beta_schedule_places_sigmas_at_beta_quantiles_linearly_in_sigma():
    s = _schedule("Beta", 9)
    smin, smax = TRAINING[0], TRAINING[-1]
    assert len(s) == 10 and s[-1] == 0
    assert s[0] == pytest.approx(smax, rel=1e-5) and s[-2] == pytest.approx(smin, rel=1e-5)
    for i, sigma in enumerate(s[1:-2], start=1):
        x = (sigma - smin) / (smax - smin)  # A1111 maps the quantile linearly onto [sigma_min, sigma_max]
        q = 1 - i / 8  # the falling ramp 1 - linspace(0, 1, 9)
        # Beta(0.6, 0.6) is symmetric, so the lower half's quadrature covers the upper half too.
        cdf = _beta_cdf_by_quadrature(x, 0.6, 0.6) if x <= 0.5 else 1 - _beta_cdf_by_quadrature(1 - x, 0.6, 0.6)
        assert cdf == pytest.approx(q, abs=2e-5), i


def test_the_new_schedules_shorten_by_one_for_discard_penultimate_samplers():
    # DPM2 asks for a sigma more and drops the next-to-last one.
    for label in ("KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"):
        s = sigmas_for(find_sampler("DPM2"), find_schedule_type(label), 4, DISCRETE)
        assert len(s) == 5 and torch.isfinite(s).all() and bool((s[1:] < s[:-1]).all()), label
