"""Memory switches for a loaded checkpoint: VAE tiling, attention slicing, model CPU offload.

All three go through diffusers' and accelerate's own APIs (`AutoencoderKL.enable_tiling`,
`set_attention_slice`, `accelerate.cpu_offload_with_hook`, the hook chain behind diffusers'
`enable_model_cpu_offload`), so nothing in torch or diffusers is patched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class MemoryOptions:
    """The memory policy of one load (from Settings: vae_tiling, attention_slicing, cpu_offload)."""

    vae_tiling: bool = False
    attention_slicing: bool = False
    cpu_offload: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> "MemoryOptions":
        return cls(bool(settings.vae_tiling), bool(settings.attention_slicing), bool(settings.cpu_offload))


def apply_memory_options(loaded: Any, options: MemoryOptions, execution_device: str | torch.device) -> list[str]:
    """Switch the options on for `loaded` (a LoadedCheckpoint); returns notes on what was skipped.

    Model CPU offload keeps every component in CPU memory and moves one at a time to the
    accelerator while it runs (text encoder, then UNet, then VAE); it needs the components
    loaded on the CPU and only means something when `execution_device` is an accelerator.
    """
    notes: list[str] = []
    if options.vae_tiling:
        loaded.vae.enable_tiling()
    if options.attention_slicing:
        loaded.unet.set_attention_slice("auto")
    if options.cpu_offload:
        device = torch.device(execution_device)
        if device.type == "cpu":
            notes.append("cpu_offload: the model already runs on the CPU; nothing to offload")
        else:
            from accelerate import cpu_offload_with_hook

            hook = None
            for module in (loaded.text_encoder, getattr(loaded, "text_encoder_2", None), loaded.unet, loaded.vae):
                if module is not None:
                    _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
    return notes
