"""Precision "auto" follows the hardware and the model: fp16 on CUDA; bf16 for SD-sized models on
CPUs with native bf16 (AVX512-BF16, AMX), the VAE kept fp32; fp32 otherwise. bf16 decode stays close to fp32."""

from __future__ import annotations

import pytest
import torch

from sdstudio.models.detect import bundled_tiny_model
from sdstudio.models.devices import (
    BF16_MIN_UNET_PARAMETERS,
    auto_weights_dtype,
    cpu_flags,
    has_fast_bf16,
    is_auto_precision,
)
from sdstudio.models.loader import load_checkpoint

ZEN4 = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni"
SAPPHIRE_RAPIDS = "fpu sse2 avx2 avx512f avx512bw amx_tile amx_bf16 amx_int8"
SKYLAKE_X = "fpu sse2 avx2 avx512f avx512bw avx512_vnni"
HASWELL = "fpu sse2 avx2 fma"
SD15_UNET = 859_520_964
BUNDLED_UNET = 2_000_000


@pytest.mark.parametrize(
    "device, flags, unet_parameters, expected",
    [
        ("cpu", ZEN4, SD15_UNET, torch.bfloat16),
        ("cpu", SAPPHIRE_RAPIDS, SD15_UNET, torch.bfloat16),
        ("cpu", SKYLAKE_X, SD15_UNET, torch.float32),  # AVX-512 without bf16: emulated bf16 is slower
        ("cpu", HASWELL, SD15_UNET, torch.float32),
        ("cpu", ZEN4, BUNDLED_UNET, torch.float32),  # a tiny model gains nothing from bf16
        ("cpu", ZEN4, BF16_MIN_UNET_PARAMETERS, torch.bfloat16),
        ("cuda", HASWELL, BUNDLED_UNET, torch.float16),
        ("cuda:1", ZEN4, SD15_UNET, torch.float16),
        ("mps", ZEN4, SD15_UNET, torch.float32),
    ],
)
def test_auto_precision_per_device_cpu_flags_and_model_size(device, flags, unet_parameters, expected):
    assert auto_weights_dtype(device, unet_parameters, flags.split()) == expected


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: {ZEN4}\n\nprocessor\t: 1\n")
    assert has_fast_bf16(cpu_flags(cpuinfo))
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {HASWELL}\n")
    assert not has_fast_bf16(cpu_flags(cpuinfo))
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("setting, auto", [("auto", True), ("", True), (None, True), ("fp32", False), ("bf16", False)])
def test_which_settings_leave_the_choice_to_the_hardware(setting, auto):
    assert is_auto_precision(setting) is auto


def test_auto_keeps_the_bundled_model_fp32_on_the_cpu():
    loaded = load_checkpoint(bundled_tiny_model(), dtype=None)
    for module in (loaded.unet, loaded.text_encoder, loaded.vae):
        assert next(module.parameters()).dtype == torch.float32
    assert loaded.dtype == torch.float32


def test_bf16_runs_the_unet_channels_last_and_its_decode_stays_close_to_fp32():
    full = load_checkpoint(bundled_tiny_model(), dtype=torch.float32)
    half = load_checkpoint(bundled_tiny_model(), dtype=torch.bfloat16)
    conv = half.unet.conv_in.weight
    assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)
    assert next(half.vae.parameters()).dtype == torch.bfloat16  # asked for bf16: the VAE too (no_half_vae keeps fp32)
    latents = torch.randn(1, full.vae.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = full.vae.decode(latents / full.vae_scaling_factor).sample.clamp(-1, 1)
        decoded = half.vae.decode((latents / half.vae_scaling_factor).to(torch.bfloat16)).sample.float().clamp(-1, 1)
    pixel_error = ((decoded - reference).abs() * 127.5).mean().item()  # in 0..255 pixel levels
    assert pixel_error < 2.0, f"bf16 decode is {pixel_error:.2f} levels from fp32 on average"
    kept = load_checkpoint(bundled_tiny_model(), dtype=torch.bfloat16, no_half_vae=True)
    assert next(kept.vae.parameters()).dtype == torch.float32
