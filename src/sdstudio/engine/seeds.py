"""Seeds and noise as A1111 makes them (modules/rng.py, processing.py).

Initial noise for each image is drawn from a CPU `torch.Generator` seeded with that
image's seed, so a seed gives the same image on any device. Variation seeds blend a
second noise in by spherical interpolation; "resize seed from" draws the noise at another
size and pastes its centre, so a seed found at 512x512 keeps its composition at 512x768.
Ancestral/SDE samplers then take fresh noise from the same per-image generators
(re-seeded with seed + eta_noise_seed_delta when that option is set), so an image does
not depend on what else is in its batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

MAX_SEED = 4294967294  # A1111 draws random seeds with random.randrange(4294967294)


def fixed_seed(seed: int | None, rng: random.Random | None = None) -> int:
    """A concrete seed: -1 (or None) becomes a random one (A1111 get_fixed_seed)."""
    if seed is None or int(seed) == -1:
        return int((rng or random.SystemRandom()).randrange(MAX_SEED))
    return int(seed)


def image_seeds(seed: int, subseed: int, subseed_strength: float, count: int) -> tuple[list[int], list[int]]:
    """Per-image seeds and subseeds for `count` images (A1111 process_images).

    Seeds count up from `seed`, except with a variation strength, where every image keeps
    the main seed and the variation seeds count up instead.
    """
    seeds = [seed + (i if subseed_strength == 0 else 0) for i in range(count)]
    subseeds = [subseed + i for i in range(count)]
    return seeds, subseeds


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noises along dim 1 (A1111 rng.slerp, quirks kept).

    When the two are nearly parallel A1111 falls back to `low * val + high * (1 - val)`
    (weights swapped relative to the spherical branch); kept so images match.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def _cpu_randn(seed: int, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    gen = generator if generator is not None else torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=gen, device="cpu")


class ImageNoise:
    """Noise for one batch: `first()` is the initial latent noise, `next()` fresh noise per step.

    `shape` is one image's latent shape (C, H, W); `latent_factor` converts the
    "resize seed from" pixel size to latent size (8 for SD's VAE).
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = 0,
        seed_resize_from_w: int = 0,
        eta_noise_seed_delta: int = 0,
        latent_factor: int = 8,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.shape = tuple(int(s) for s in shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = [int(s) for s in subseeds] if subseeds is not None else None
        self.subseed_strength = float(subseed_strength)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.eta_noise_seed_delta = int(eta_noise_seed_delta or 0)
        self.latent_factor = latent_factor
        self.device = torch.device(device)
        self.dtype = dtype
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]
        self._first_done = False

    def _noise_shape(self) -> tuple[int, ...]:
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape
        f = self.latent_factor
        return (self.shape[0], self.seed_resize_from_h // f, self.seed_resize_from_w // f)

    def first(self) -> torch.Tensor:
        """Initial noise [B, C, H, W] (A1111 ImageRNG.first / create_random_tensors)."""
        noise_shape = self._noise_shape()
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = _cpu_randn(subseed, noise_shape)
            if noise_shape != self.shape:
                noise = _cpu_randn(seed, noise_shape)
            else:
                noise = _cpu_randn(seed, self.shape, generator=generator)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                noise = _paste_centre(_cpu_randn(seed, self.shape, generator=generator), noise)
            xs.append(noise)
        if self.eta_noise_seed_delta:
            self.generators = [torch.Generator("cpu").manual_seed(s + self.eta_noise_seed_delta) for s in self.seeds]
        self._first_done = True
        return torch.stack(xs).to(self.device, self.dtype)

    def next(self) -> torch.Tensor:
        """Fresh unit noise for every image of the batch, from its own generator."""
        if not self._first_done:
            return self.first()
        xs = [torch.randn(self.shape, generator=g, device="cpu") for g in self.generators]
        return torch.stack(xs).to(self.device, self.dtype)

    def sampler_noise(self, sigma: torch.Tensor | None = None, sigma_next: torch.Tensor | None = None) -> torch.Tensor:
        """The sampler-facing noise source: `noise(sigma, sigma_next)`."""
        return self.next()


def _paste_centre(target: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Paste `noise` centred into `target` (both [C, H, W]), cropping when larger (A1111)."""
    dx = (target.shape[2] - noise.shape[2]) // 2
    dy = (target.shape[1] - noise.shape[1]) // 2
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    target[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
    return target
