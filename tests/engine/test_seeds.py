"""Seeds behave as in A1111: per-image CPU noise, variations, resize-from, -1."""

from __future__ import annotations

import torch

from sdstudio.engine.seeds import ImageNoise, fixed_seed, image_seeds, slerp


def test_noise_is_torch_cpu_randn_of_the_seed():
    noise = ImageNoise((4, 8, 8), [1234]).first()
    expected = torch.randn((4, 8, 8), generator=torch.Generator("cpu").manual_seed(1234))
    assert torch.equal(noise[0], expected)


def test_an_image_does_not_depend_on_its_batch():
    seeds, _ = image_seeds(100, 0, 0.0, 3)
    assert seeds == [100, 101, 102]
    batch = ImageNoise((4, 8, 8), seeds)
    alone = ImageNoise((4, 8, 8), [101])
    assert torch.equal(batch.first()[1], alone.first()[0])
    assert torch.equal(batch.next()[1], alone.next()[0])


def test_variation_seeds_count_up_and_main_seed_stays():
    seeds, subseeds = image_seeds(7, 50, 0.3, 3)
    assert seeds == [7, 7, 7] and subseeds == [50, 51, 52]


def test_variation_strength_moves_from_seed_to_subseed():
    base = ImageNoise((4, 8, 8), [1]).first()
    zero = ImageNoise((4, 8, 8), [1], [2], 0.0).first()
    half = ImageNoise((4, 8, 8), [1], [2], 0.5).first()
    assert torch.equal(base, zero)
    assert not torch.allclose(base, half)
    other = ImageNoise((4, 8, 8), [2]).first()
    full = ImageNoise((4, 8, 8), [1], [2], 1.0).first()
    assert torch.allclose(full, other, atol=1e-4)


def test_slerp_keeps_unit_variance_roughly():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 4, 64, 64, generator=generator), torch.randn(1, 4, 64, 64, generator=generator)
    mid = slerp(0.5, a, b)
    assert 0.8 < mid.std().item() < 1.2


def test_resize_seed_from_keeps_the_centre():
    small = ImageNoise((4, 8, 8), [9]).first()[0]
    big = ImageNoise((4, 12, 16), [9], seed_resize_from_h=64, seed_resize_from_w=64).first()[0]
    assert torch.equal(big[:, 2:10, 4:12], small)


def test_eta_noise_seed_delta_changes_only_the_sampler_noise():
    plain = ImageNoise((4, 8, 8), [5])
    delta = ImageNoise((4, 8, 8), [5], eta_noise_seed_delta=31337)
    assert torch.equal(plain.first(), delta.first())
    assert not torch.equal(plain.next(), delta.next())
    again = ImageNoise((4, 8, 8), [5], eta_noise_seed_delta=31337)
    again.first()
    # After the initial noise, A1111 re-seeds each image's generator with seed + ENSD.
    assert torch.equal(again.next()[0], torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(5 + 31337)))


def test_minus_one_gives_a_random_seed_in_range():
    seeds = {fixed_seed(-1) for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= s < 4294967294 for s in seeds)
    assert fixed_seed(42) == 42
