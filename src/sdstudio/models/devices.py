"""The one place that turns the `device` and `precision` settings into a torch device and dtype.

"auto" means the first CUDA GPU when there is one, else the CPU. Precision "auto" means fp16
on CUDA (A1111's default); on a CPU with native bf16 instructions (AVX512-BF16 or AMX) an
SD-sized UNet and its text encoders run in bf16 (about twice the matmul rate of fp32 there),
the VAE stays fp32; elsewhere fp32. torch is imported only when a call needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISION_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "full": "float32",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


def resolve_device(device: str | None) -> str:
    """A torch device name for the `device` setting ("auto"/"" -> cuda when available, else cpu)."""
    if device not in ("auto", "", None):
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def weights_dtype(precision: str | None, device: str) -> torch.dtype:
    """The dtype for model weights from the `precision` setting on `device`."""
    import torch

    named = PRECISION_NAMES.get(str(precision or "auto").lower())
    if named is not None:
        dtype: torch.dtype = getattr(torch, named)
        return dtype
    return torch.float16 if device.startswith("cuda") else torch.float32


FAST_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""/proc/cpuinfo flags of CPUs that multiply bf16 natively; without them bf16 is emulated and slower than fp32."""

BF16_MIN_UNET_PARAMETERS = 100_000_000
"""Below this (the bundled tiny model has ~2M) a step is dominated by per-op overhead, which bf16
does not shrink, and its casts cost more than its matmuls save: such models stay fp32. SD 1.5's
UNet has 860M, SDXL's 2.6B."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where the file is missing or unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_fast_bf16(flags: Iterable[str]) -> bool:
    """Whether a CPU with these flags runs bf16 matmuls natively."""
    return not FAST_BF16_CPU_FLAGS.isdisjoint(flags)


def auto_weights_dtype(device: str, unet_parameters: int, flags: Iterable[str] | None = None) -> torch.dtype:
    """Precision "auto" for a model of this size on `device` (`flags`: the CPU's, read when not given)."""
    import torch

    if device.startswith("cuda"):
        return torch.float16
    if device.startswith("cpu") and unet_parameters >= BF16_MIN_UNET_PARAMETERS:
        if has_fast_bf16(cpu_flags() if flags is None else flags):
            return torch.bfloat16
    return torch.float32


def is_auto_precision(precision: str | None) -> bool:
    """Whether the `precision` setting leaves the choice to the hardware and the model."""
    return str(precision or "auto").lower() not in PRECISION_NAMES
