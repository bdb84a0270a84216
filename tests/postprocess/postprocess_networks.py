"""Random-weight upscaler and face-restoration networks saved in their projects' published layouts.

Each builder makes the network from spandrel's own architecture class (small sizes where
spandrel reads the size from the weights; GFPGAN has to be full size) and writes it the way
the original project publishes it: ESRGAN as a plain old-layout state dict, Real-ESRGAN
RRDBNet with its renamed keys under `params_ema`, Real-ESRGAN compact under `params`,
SwinIR, GFPGAN and CodeFormer under `params_ema`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFilter
from tiny_models import seeded_rng


def _contiguous(state: dict) -> dict:
    return {k: v.contiguous().clone() for k, v in state.items()}


def save_esrgan(path: Path, scale: int = 4, num_filters: int = 8, num_blocks: int = 1, seed: int = 0) -> Path:
    """ESRGAN (xinntao/ESRGAN, e.g. 4x-UltraSharp): the old `model.N` key layout, no wrapper."""
    from spandrel.architectures.ESRGAN import ESRGAN

    with seeded_rng(seed):
        net = ESRGAN(num_filters=num_filters, num_blocks=num_blocks, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_contiguous(net.state_dict()), path)
    return path


_OLD_TO_REALESRGAN = (
    (r"^model\.0\.", "conv_first."),
    (r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3."),
    (r"^model\.3\.", "conv_up1."),
    (r"^model\.6\.", "conv_up2."),
    (r"^model\.8\.", "conv_hr."),
    (r"^model\.10\.", "conv_last."),
)


def save_realesrgan_rrdb(path: Path, num_filters: int = 8, num_blocks: int = 1, seed: int = 0) -> Path:
    """Real-ESRGAN RealESRGAN_x4plus: basicsr RRDBNet keys (conv_first, body.N.rdbK...) under `params_ema`."""
    from spandrel.architectures.ESRGAN import ESRGAN

    with seeded_rng(seed):
        old = ESRGAN(num_filters=num_filters, num_blocks=num_blocks, scale=4).state_dict()
    new = {}
    for key, value in old.items():
        renamed = re.sub(rf"^model\.1\.sub\.{num_blocks}\.", "conv_body.", key)
        for pattern, replacement in _OLD_TO_REALESRGAN:
            renamed = re.sub(pattern, replacement, renamed)
        assert not renamed.startswith("model."), key
        new[renamed] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": _contiguous(new)}, path)
    return path


def save_compact(path: Path, scale: int = 2, num_feat: int = 8, num_conv: int = 2, seed: int = 0) -> Path:
    """Real-ESRGAN compact (SRVGGNetCompact, realesr-general-x4v3): under `params`."""
    from spandrel.architectures.Compact import Compact

    with seeded_rng(seed):
        net = Compact(num_feat=num_feat, num_conv=num_conv, upscale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": _contiguous(net.state_dict())}, path)
    return path


def save_swinir(path: Path, scale: int = 2, seed: int = 0) -> Path:
    """SwinIR (tiny: one stage of two blocks, window 4) under `params_ema`, pixelshuffle upsampler."""
    from spandrel.architectures.SwinIR import SwinIR

    with seeded_rng(seed):
        net = SwinIR(
            img_size=16,
            embed_dim=12,
            depths=[2],
            num_heads=[2],
            window_size=4,
            mlp_ratio=2.0,
            upscale=scale,
            upsampler="pixelshuffle",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": _contiguous(net.state_dict())}, path)
    return path


def save_gfpgan(path: Path, seed: int = 0) -> Path:
    """GFPGAN v1.3/1.4 (GFPGANv1Clean, full size: spandrel cannot read its size from the weights) under `params_ema`."""
    from spandrel.architectures.GFPGAN import GFPGAN

    with seeded_rng(seed):
        net = GFPGAN()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": _contiguous(net.state_dict())}, path)
    return path


def save_codeformer(path: Path, seed: int = 0) -> Path:
    """CodeFormer (small transformer and codebook; the VQ autoencoder is fixed size) under `params_ema`."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    with seeded_rng(seed):
        net = CodeFormer(dim_embd=64, n_head=2, n_layers=1, codebook_size=64, latent_size=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": _contiguous(net.state_dict())}, path)
    return path


def draw_face(size: int = 256, background=(70, 90, 120)) -> Image.Image:
    """A cartoon face (hair, skin oval, eyes with pupils and brows, nose, mouth) that dlib's detector finds."""
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    unit = size / 256
    x0, y0, x1, y1 = 64 * unit, 48 * unit, 192 * unit, 208 * unit
    w, h = x1 - x0, y1 - y0
    draw.ellipse((x0 - w * 0.05, y0 - h * 0.08, x1 + w * 0.05, y0 + h * 0.45), fill=(60, 40, 25))
    draw.ellipse((x0, y0, x1, y1), fill=(225, 180, 150))
    eye_y = y0 + h * 0.42
    for cx in (x0 + w * 0.32, x0 + w * 0.68):
        draw.ellipse((cx - w * 0.11, eye_y - h * 0.04, cx + w * 0.11, eye_y + h * 0.04), fill=(250, 250, 250))
        draw.ellipse((cx - w * 0.045, eye_y - h * 0.04, cx + w * 0.045, eye_y + h * 0.04), fill=(40, 30, 20))
        draw.line(
            (cx - w * 0.13, eye_y - h * 0.10, cx + w * 0.13, eye_y - h * 0.11),
            fill=(60, 40, 25),
            width=max(2, int(w * 0.04)),
        )
    cx = x0 + w * 0.5
    draw.polygon(
        [(cx, eye_y + h * 0.02), (cx - w * 0.07, y0 + h * 0.66), (cx + w * 0.07, y0 + h * 0.66)], fill=(200, 150, 125)
    )
    draw.chord((cx - w * 0.18, y0 + h * 0.70, cx + w * 0.18, y0 + h * 0.84), 0, 180, fill=(170, 60, 60))
    return image.filter(ImageFilter.GaussianBlur(1))


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB image (random content, but not pure noise)."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(3, max(2, height // 8), max(2, width // 8), generator=generator)
    big = torch.nn.functional.interpolate(small[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    big = (big + 0.1 * torch.rand(3, height, width, generator=generator)).clamp(0, 1)
    return Image.fromarray((big.permute(1, 2, 0).numpy() * 255).round().astype("uint8"), "RGB")
