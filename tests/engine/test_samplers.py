"""Every sampler x schedule type runs; deterministic samplers agree; schedules match their maths."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from tiny_models import SCHEDULER_CONFIG

from sdstudio.engine.infotext import request_fields_from_infotext
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.engine.samplers import (
    SAMPLERS,
    SCHEDULE_TYPES,
    DiscreteSigmas,
    SamplerOptions,
    effective_schedule,
    find_sampler,
    find_schedule_type,
    karras_sigmas,
    resolve_sampler_and_schedule,
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
        assert len(s) == 9 and bool((s[1:] < s[:-1]).all()), schedule.label
        # As in A1111: KL Optimal stops at the smallest sigma, DDIM starts at timestep 876's.
        last = DISCRETE.sigma_min if schedule.name == "kl_optimal" else 0.0
        first = DISCRETE.sigmas[876].item() if schedule.name == "ddim" else DISCRETE.sigma_max
        assert s[-1].item() == pytest.approx(last, rel=1e-5) and s[0].item() == pytest.approx(first, rel=1e-3)
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


def _dpm_multistep_in_diffusers(unet, steps, solver_type):
    """DPM-Solver++(2M) (eta 0) through diffusers' own scheduler: the reference for the 2M SDE variants."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_config(
        {**SCHEDULER_CONFIG, "algorithm_type": "dpmsolver++", "solver_type": solver_type, "use_karras_sigmas": True}
    )
    scheduler.set_timesteps(steps)
    job = _job(unet, find_sampler("Euler"), SCHEDULE_TYPES[0], steps, cfg=1.0)
    x = job.initial_noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = job.guided(scheduler.scale_model_input(x, t), t.reshape(1).float(), 0)
        x = scheduler.step(eps, t, x).prev_sample
    return x


def test_dpmpp_2m_sde_heun_at_eta_0_is_diffusers_dpm_solver_with_heun_correction(tiny_components):
    unet, karras = tiny_components[0], find_schedule_type("Karras")
    ours = {}
    for name in ("DPM++ 2M SDE", "DPM++ 2M SDE Heun"):
        job = _job(unet, find_sampler(name), karras, 8, cfg=1.0)
        job.options = SamplerOptions(eta=0.0)
        ours[name] = run_sampler(job)
    heun, midpoint = _dpm_multistep_in_diffusers(unet, 8, "heun"), _dpm_multistep_in_diffusers(unet, 8, "midpoint")
    assert (ours["DPM++ 2M SDE Heun"] - heun).abs().max() < 0.3 * (heun - midpoint).abs().max()
    assert (ours["DPM++ 2M SDE"] - midpoint).abs().max() < 0.3 * (heun - midpoint).abs().max()


class _GaussianData:
    """Data ~ N(mean, std^2): the exact denoiser E[x0 | x] and how many times it was asked."""

    def __init__(self, mean: float, std: float) -> None:
        self.mean, self.std, self.calls = mean, std, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.mean + self.std**2 / (self.std**2 + sigma**2) * (x - self.mean)


def _toy_noise(seed):
    gen = torch.Generator().manual_seed(seed)
    return lambda x: lambda sigma, sigma_next: torch.randn(x.shape, generator=gen, dtype=x.dtype)


def test_restart_below_20_steps_is_heun():
    data, sigmas = _GaussianData(0.5, 0.2), sigmas_for(find_sampler("Heun"), find_schedule_type("Karras"), 12, DISCRETE)
    x = torch.randn(64, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    restart = find_sampler("Restart").function(data, x, sigmas, _toy_noise(1)(x), None, SamplerOptions())
    heun = find_sampler("Heun").function(data, x, sigmas, _toy_noise(1)(x), None, SamplerOptions())
    assert torch.equal(restart, heun)


def test_restart_goes_back_up_once_at_20_steps_and_keeps_the_data_distribution():
    data = _GaussianData(0.5, 0.2)
    sigmas = sigmas_for(find_sampler("Restart"), SCHEDULE_TYPES[0], 20, DISCRETE)
    smin, smax = sigmas[-2].item(), sigmas[0].item()

    def karras(n, low, high):  # Karras et al. 2022 eq. 5, written out here as the reference
        return [(high ** (1 / 7) + k / (n - 1) * (low ** (1 / 7) - high ** (1 / 7))) ** 7 for k in range(n)]

    # A1111's plan: 11 Karras steps, and after the step landing nearest sigma 0.1 one restart that climbs
    # back to the sigma nearest 2 and comes down again in 9 Karras steps.
    base = karras(11, smin, smax) + [0.0]
    low = min(range(12), key=lambda k: abs(base[k] - 0.1))
    high = min(range(12), key=lambda k: abs(base[k] - 2.0))
    expected = base[:low] + karras(10, base[low], base[high])[:-1] + base[low:-1]

    seen = []
    x = torch.randn(20000, generator=torch.Generator().manual_seed(0)) * smax
    out = find_sampler("Restart").function(
        data, x, sigmas, _toy_noise(1)(x), lambda info: seen.append(info.sigma), SamplerOptions()
    )
    assert seen == pytest.approx(expected, rel=1e-5)
    assert data.calls == 2 * 20 - 1  # Heun everywhere but the last step to sigma 0
    # Restarting adds exactly the noise between the two levels, so the samples keep the data's law.
    assert out.mean().item() == pytest.approx(0.5, abs=0.01) and out.std().item() == pytest.approx(0.2, rel=0.03)


def _ddim_cfgpp_by_hand(unet, cfg, steps):
    """A1111's DDIM CFG++ written from the paper: x0 from eps_u + cfg/12.5 (eps_c - eps_u), step along eps_u."""
    job = _job(unet, find_sampler("DDIM"), SCHEDULE_TYPES[0], steps, cfg=1.0)
    cond, uncond = job.guided.conditioning.cond, job.guided.conditioning.uncond
    only_uncond = GuidedUNet(unet, FixedConditioning(uncond, uncond), 1.0)
    only_cond = GuidedUNet(unet, FixedConditioning(cond, uncond), 1.0)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    timesteps = list(range(1, 1000, 1000 // steps))[::-1]  # CompVis DDIM: 1, 1 + c, ...
    x = job.initial_noise
    for i, t in enumerate(timesteps):
        a, a_prev = abar[t].item(), abar[timesteps[i + 1] if i + 1 < len(timesteps) else 0].item()
        t_in = torch.tensor([float(t)])
        eps_u, eps_c = only_uncond(x, t_in, i), only_cond(x, t_in, i)
        x0 = (x - (1 - a) ** 0.5 * (eps_u + cfg / 12.5 * (eps_c - eps_u))) / a**0.5
        x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps_u
    return x


def test_ddim_cfgpp_follows_cfgpp_with_the_scale_divided_by_12_5(tiny_components):
    unet = tiny_components[0]
    ours = run_sampler(_job(unet, find_sampler("DDIM CFG++"), SCHEDULE_TYPES[0], 3, cfg=7.0))
    assert torch.allclose(ours, _ddim_cfgpp_by_hand(unet, 7.0, 3), atol=1e-4)
    assert not torch.allclose(ours, run_sampler(_job(unet, find_sampler("DDIM"), SCHEDULE_TYPES[0], 3, cfg=7.0)))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_cfgpp_without_guidance_is_ddim(tiny_components, prediction_type):
    # With the negative prompt equal to the prompt every guidance scale gives eps_uncond: CFG++ is plain DDIM,
    # here driven by diffusers' DDIMScheduler (which also converts v-predictions independently of ours).
    unet = tiny_components[0]
    results = []
    for name in ("DDIM CFG++", "DDIM"):
        job = _job(unet, find_sampler(name), SCHEDULE_TYPES[0], 4, cfg=7.0)
        job.guided.conditioning.uncond = job.guided.conditioning.cond
        job.prediction_type = prediction_type
        job.options = SamplerOptions(eta=0.5)  # noise too: both draw it once per step
        results.append(run_sampler(job))
    assert torch.allclose(results[0], results[1], atol=1e-4)


def test_every_pair_makes_an_image_whose_infotext_names_the_same_pair(service):
    # One test over the whole table, on one service: a tiny model, 3 steps, 32 px.
    for sampler in SAMPLERS:
        for schedule in SCHEDULE_TYPES:
            pair = f"{sampler.name} / {schedule.label}"
            request = Txt2ImgRequest(
                prompt="a cube",
                seed=3,
                steps=3,
                width=32,
                height=32,
                sampler_name=sampler.name,
                scheduler=schedule.label,
                do_not_save_samples=True,
                do_not_save_grid=True,
            )
            result = service.txt2img(request)
            image = np.asarray(result.images[0], dtype=np.float32)
            assert image.shape == (32, 32, 3) and np.isfinite(image).all(), pair
            parsed = Txt2ImgRequest(**request_fields_from_infotext(result.infotexts[0]))
            parsed_sampler, parsed_schedule = resolve_sampler_and_schedule(parsed.sampler_name, parsed.scheduler)
            assert parsed_sampler is sampler, pair
            # "Automatic" comes back as what it ran (DPM++ 2M: Karras), as A1111 writes it.
            assert effective_schedule(sampler, parsed_schedule) is effective_schedule(sampler, schedule), pair
            assert parsed_schedule is schedule or schedule.name == "automatic", pair
            # Each sampler ran at its own default eta (DDIM's and DDIM CFG++'s: the eta_ddim setting, 0).
            assert "Eta:" not in result.infotexts[0], pair


def test_beta_schedule_writes_its_shape_as_a1111s_k_diffusion_samplers_do(service):
    def infotext(sampler, schedule):
        request = Txt2ImgRequest(
            prompt="a", steps=2, width=32, height=32, sampler_name=sampler, scheduler=schedule, do_not_save_samples=True
        )
        return service.txt2img(request).infotexts[0]

    assert "Beta schedule alpha: 0.6, Beta schedule beta: 0.6" in infotext("Euler", "Beta")
    assert "Beta schedule" not in infotext("Euler", "Karras")
    assert "Beta schedule" not in infotext("DDIM", "Beta")  # timestep samplers do not use schedule types
