"""Live previews: a cheap latent -> RGB picture of the image being denoised.

For SD1/SD2 and SDXL latents this is A1111's "Approx cheap" (sd_vae_approx.cheap_approximation):
a fixed linear map from the 4 latent channels to RGB, costing nothing next to a UNet step.
Latents of any other shape (a custom VAE) have no known map; there the preview falls back
to a full VAE decode passed in by the caller, or a grey-scale view of the first channels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

# A1111 sd_vae_approx.cheap_approximation coefficients: rows = latent channels, cols = R, G, B.
SD1_LATENT_RGB = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)
SDXL_LATENT_RGB = torch.tensor(
    [[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163], [-0.3730, -0.2499, -0.2088]]
)


def _to_pil(rgb: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] -> PIL."""
    array = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def cheap_preview(
    latent: torch.Tensor, family: str = "sd1", decode: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> Image.Image:
    """A preview of the first image in a latent batch [B, C, H, W] (model-space latents)."""
    sample = latent[:1].detach().float().cpu()
    channels = sample.shape[1]
    if channels == 4:
        coefs = SDXL_LATENT_RGB if family == "sdxl" else SD1_LATENT_RGB
        rgb = torch.einsum("blxy,lr->brxy", sample, coefs)[0]
        return _to_pil(rgb)
    if decode is not None:
        with torch.no_grad():
            return _to_pil(decode(latent[:1])[0].float())
    grey = sample[0, : min(3, channels)].mean(0, keepdim=True)
    grey = grey / (grey.abs().max() + 1e-6)
    return _to_pil(grey.expand(3, -1, -1))
