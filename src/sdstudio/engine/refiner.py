"""A1111's refiner: part-way through denoising, another checkpoint takes over.

A1111 (modules/sd_samplers_common.py apply_refiner) checks before every model evaluation
how much of the denoising is done, and once that reaches `refiner_switch_at` it loads the
refiner, encodes the prompts again with the refiner's text encoders and goes on sampling
the same schedule with the refiner's UNet; the rest of the job (the hires pass after a
first-pass switch, the VAE decode) runs on the refiner too. "Done" is measured by noise
level: the discrete timestep nearest the current sigma, (999 - t) / 1000; with the
`refiner_switch_by_sample_steps` option, by model evaluations instead.

`SwitchingGuidance` wraps the current pass's guided UNet and does the hand-over; the job
(processing.py) builds the refiner's guided UNet when asked, so this module knows nothing
of prompts or checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdstudio.engine.samplers import DiscreteSigmas
from sdstudio.engine.sampling import Guidance


@dataclass(frozen=True)
class RefinerSwitch:
    """When to switch: at `switch_at` of the denoising done (None: before the first evaluation, as A1111)."""

    switch_at: float | None
    by_sampling_steps: bool = False

    def completed(self, t: torch.Tensor, evaluation: int, total_evaluations: int, discrete: DiscreteSigmas) -> float:
        """The fraction of the denoising done at this evaluation (A1111's completed_ratio)."""
        if self.by_sampling_steps:
            return evaluation / max(1, total_evaluations)
        # The discrete timestep nearest the current noise level; t is fractional for sigma
        # samplers (log-sigma interpolation) and whole for timestep samplers (DDIM...).
        sigma = discrete.t_to_sigma(t.detach().reshape(-1).max().clamp(0, len(discrete.sigmas) - 1).cpu())
        timestep = int(torch.argmin((discrete.sigmas - sigma).abs()))
        last = len(discrete.sigmas) - 1
        return (last - timestep) / (last + 1)

    def due(self, t: torch.Tensor, evaluation: int, total_evaluations: int, discrete: DiscreteSigmas) -> bool:
        """Whether the refiner takes over before this evaluation."""
        if self.switch_at is None:
            return True
        return self.completed(t, evaluation, total_evaluations, discrete) >= self.switch_at


class SwitchingGuidance:
    """A pass's guided UNet that hands over to the refiner's once `switch` says it is due."""

    def __init__(
        self,
        guided: Guidance,
        switch: RefinerSwitch,
        discrete: DiscreteSigmas,
        total_evaluations: int,
        take_over: Callable[[], Guidance],
    ) -> None:
        self.guided = guided
        self.switch = switch
        self.discrete = discrete
        self.total_evaluations = total_evaluations
        self.take_over = take_over
        self.switched = False

    def __call__(self, x: torch.Tensor, t: torch.Tensor, step: int) -> torch.Tensor:
        return self.with_uncond(x, t, step)[0]

    def with_uncond(
        self, x: torch.Tensor, t: torch.Tensor, step: int, scale_multiplier: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Switch first if due, then evaluate the current model (guided output, unconditional output)."""
        if not self.switched and self.switch.due(t, step, self.total_evaluations, self.discrete):
            self.guided = self.take_over()
            self.switched = True
        return self.guided.with_uncond(x, t, step, scale_multiplier)
