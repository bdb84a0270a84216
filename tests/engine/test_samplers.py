"""Every sampler x schedule type runs; deterministic samplers agree; schedules match their maths."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tiny_models import SCHEDULER_CONFIG

from sdstudio.engine.samplers import (
    SAMPLERS,
    SCHEDULE_TYPES,
    DiscreteSigmas,
    SamplerOptions,
    find_sampler,
    find_schedule_type,
    karras_sigmas,
    sigmas_for,
)
from sdstudio.engine.sampling import FixedConditioning, GuidedUNet, SamplingJob, run_sampler
from sdstudio.engine.seeds import ImageNoise

DISCRETE = DiscreteSigmas.from_scheduler_config(SCHEDULER_CONFIG)


def _job(unet, sampler, schedule, steps, seed=1, cfg=3.0):
    gen = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(1, 77, 32, generator=gen), torch.randn(1, 77, 32, generator=gen)
    noise = ImageNoise((4, 8, 8), [seed])
    return SamplingJob(
        sampler=sampler,
        schedule=schedule,
        steps=steps,
        guided=GuidedUNet(unet, FixedConditioning(cond, uncond), cfg),
        discrete=DISCRETE,
        prediction_type="epsilon",
        scheduler_config=SCHEDULER_CONFIG,
        noise=noise.next,
        initial_noise=noise.first(),
        options=SamplerOptions(eta=sampler.default_eta),
    )


@pytest.mark.parametrize("schedule", SCHEDULE_TYPES, ids=lambda s: s.label)
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_every_sampler_and_schedule_runs_and_is_repeatable(tiny_components, sampler, schedule):
    unet = tiny_components[0]
    steps = []
    job = _job(unet, sampler, schedule, 3)
    job.callback = lambda info: steps.append(info.step)
    first = run_sampler(job)
    second = run_sampler(_job(unet, sampler, schedule, 3))
    assert first.shape == (1, 4, 8, 8) and torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert steps and steps[0] == 0
    if not sampler.name == "DPM adaptive":
        assert len(steps) <= 3 + (sampler.name == "PLMS")  # diffusers PLMS repeats its first timestep


# noise_split stops the deterministic part at t_next where k-diffusion uses t_end, so these add no noise at all.
_NOISELESS = {"DPM fast", "DPM adaptive"}


@pytest.mark.parametrize(
    "sampler",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason="DPM fast/adaptive add no noise"))
        if s.name in _NOISELESS
        else s
        for s in SAMPLERS
    ],
    ids=lambda s: s.name,
)
def test_sigma_options_a_sampler_lists_are_the_ones_that_change_its_image(tiny_components, sampler):
    """The infotext writes "Sigma churn/noise" for the samplers listing them: exactly those they change."""
    unet, karras = tiny_components[0], find_schedule_type("Karras")

    def run(**options):
        job = _job(unet, sampler, karras, 4)
        job.options = dataclasses.replace(job.options, **options)
        return run_sampler(job)

    plain, churned = run(), run(s_churn=1.0)
    assert (not torch.equal(churned, plain)) == ("s_churn" in sampler.sigma_options)
    # s_noise scales the churn noise of Euler/Heun/DPM2, and the fresh noise of the others.
    assert (not torch.equal(run(s_churn=1.0, s_noise=0.5), churned)) == ("s_noise" in sampler.sigma_options)


def test_deterministic_samplers_converge_to_the_same_image(tiny_components):
    unet = tiny_components[0]
    karras = find_schedule_type("Karras")
    results = {
        name: run_sampler(_job(unet, find_sampler(name), karras, 40, cfg=1.0))
        for name in ("Euler", "Heun", "LMS", "DPM++ 2M", "DPM2")
    }
    reference = results["Heun"]
    scale = reference.abs().mean()
    for name, out in results.items():
        assert (out - reference).abs().mean() / scale < 0.05, name
    # ...while an ancestral sampler lands elsewhere.
    ancestral = run_sampler(_job(unet, find_sampler("Euler a"), karras, 40, cfg=1.0))
    assert (ancestral - reference).abs().mean() / scale > 0.05


def test_euler_matches_diffusers_euler_on_the_same_sigmas(tiny_components):
    from diffusers import EulerDiscreteScheduler

    unet = tiny_components[0]
    euler, karras = find_sampler("Euler"), find_schedule_type("Karras")
    ours = run_sampler(_job(unet, euler, karras, 6, cfg=1.0))
    scheduler = EulerDiscreteScheduler.from_config(
        {**SCHEDULER_CONFIG, "use_karras_sigmas": True, "timestep_spacing": "linspace"}
    )
    scheduler.set_timesteps(6)
    job = _job(unet, euler, karras, 6, cfg=1.0)
    x = job.initial_noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = job.guided(scheduler.scale_model_input(x, t), t.reshape(1).float(), 0)
        x = scheduler.step(eps, t, x).prev_sample
    assert torch.allclose(ours, x, atol=2e-2, rtol=1e-2)


def test_karras_sigmas_follow_eq5():
    s = karras_sigmas(10, 0.03, 14.6)
    assert len(s) == 11 and s[-1] == 0
    assert math.isclose(s[0].item(), 14.6, rel_tol=1e-5) and math.isclose(s[-2].item(), 0.03, rel_tol=1e-4)
    inv = s[:-1] ** (1 / 7)
    assert torch.allclose(inv[1:] - inv[:-1], (inv[1] - inv[0]).expand(9), atol=1e-5)


def test_schedules_span_the_models_sigma_range_and_discard_for_dpm2():
    for schedule in SCHEDULE_TYPES[1:]:
        s = sigmas_for(find_sampler("Euler"), schedule, 8, DISCRETE)
        assert len(s) == 9 and s[-1] == 0
        assert s[0].item() == pytest.approx(DISCRETE.sigma_max, rel=1e-3)
        assert bool((s[:-1][1:] < s[:-1][:-1]).all())
    assert len(sigmas_for(find_sampler("DPM2"), SCHEDULE_TYPES[0], 8, DISCRETE)) == 9


def test_automatic_schedule_is_the_samplers_a1111_default():
    auto = SCHEDULE_TYPES[0]
    assert torch.equal(
        sigmas_for(find_sampler("DPM++ 2M"), auto, 5, DISCRETE),
        sigmas_for(find_sampler("DPM++ 2M"), find_schedule_type("Karras"), 5, DISCRETE),
    )
    assert torch.equal(
        sigmas_for(find_sampler("Euler"), auto, 5, DISCRETE),
        sigmas_for(find_sampler("Euler"), find_schedule_type("Uniform"), 5, DISCRETE),
    )


def test_cfg_batches_cond_and_uncond_in_one_unet_call(tiny_components):
    unet = tiny_components[0]
    calls = []
    handle = unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        job = _job(unet, find_sampler("Euler"), SCHEDULE_TYPES[0], 2)
        run_sampler(job)
    finally:
        handle.remove()
    assert calls == [2, 2]


def test_and_composition_weights_add_per_subprompt(tiny_components):
    unet = tiny_components[0]
    gen = torch.Generator().manual_seed(3)
    a, b, u = (torch.randn(1, 77, 32, generator=gen) for _ in range(3))
    x, t = torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([500.0])
    composed = GuidedUNet(unet, FixedConditioning(torch.cat([a, b]), u, [[(0, 1.0), (1, 0.5)]]), 2.0)(x, t, 0)
    only_a = GuidedUNet(unet, FixedConditioning(a, u), 1.0)(x, t, 0)
    only_b = GuidedUNet(unet, FixedConditioning(b, u), 1.0)(x, t, 0)
    uncond = GuidedUNet(unet, FixedConditioning(u, u), 1.0)(x, t, 0)
    expected = uncond + 2.0 * (only_a - uncond) + 2.0 * 0.5 * (only_b - uncond)
    assert torch.allclose(composed, expected, atol=1e-4)
