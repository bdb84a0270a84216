"""The one place that turns the `device` and `precision` settings into a torch device and dtype.

"auto" means the first CUDA GPU when there is one, else the CPU; precision "auto" means fp16
on CUDA and fp32 elsewhere (A1111's defaults). torch is imported only when a call needs it.
"""

from __future__ import annotations

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
