"""Pixel-side helpers for img2img and inpainting, as A1111 does them.

resize modes (images.resize_image), mask blur (processing.py, cv2 Gaussian per axis),
masked-content "fill" (masking.fill), the "only masked" crop region (masking.get_crop_region
and expand_crop_region) and pasting the result back over the original (apply_overlay).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to (width, height): 0 stretch, 1 crop to fill, 2 fit and fill the bars, 3 stretch."""
    if resize_mode in (0, 3):
        return im.resize((width, height), resample=Image.Resampling.LANCZOS)
    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = im.resize((src_w, src_h), resample=Image.Resampling.LANCZOS)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = im.resize((src_w, src_h), resample=Image.Resampling.LANCZOS)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(
                resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                box=(0, fill_height + src_h),
            )
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(
                resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                box=(fill_width + src_w, 0),
            )
    return res


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """Gaussian-blur a mask separately along x and y (A1111's kernel size 2*int(2.5*s+0.5)+1)."""
    import cv2

    array = np.array(mask.convert("L"))
    if blur_x > 0:
        k = 2 * int(2.5 * blur_x + 0.5) + 1
        array = cv2.GaussianBlur(array, (k, 1), blur_x)
    if blur_y > 0:
        k = 2 * int(2.5 * blur_y + 0.5) + 1
        array = cv2.GaussianBlur(array, (1, k), blur_y)
    return Image.fromarray(array)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Fill the masked area with ever-finer blurs of the surrounding colours (A1111 masking.fill)."""
    image_mod = Image.new("RGBA", image.size)
    image_masked = Image.new("RGBa", image.size)
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def crop_region(mask: Image.Image, pad: int = 0) -> tuple[int, int, int, int] | None:
    """Bounding box of the mask's non-zero pixels grown by `pad` (A1111 get_crop_region)."""
    box = mask.convert("L").point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)


def expand_crop_region(
    region: tuple[int, int, int, int],
    processing_width: int,
    processing_height: int,
    image_width: int,
    image_height: int,
) -> tuple[int, int, int, int]:
    """Grow a crop region to the processing aspect ratio, kept inside the image (A1111)."""
    x1, y1, x2, y2 = region
    ratio_processing = processing_width / processing_height
    if (x2 - x1) / (y2 - y1) > ratio_processing:
        y1, y2 = _grow_span(y1, y2, (x2 - x1) / ratio_processing, image_height)
    else:
        x1, x2 = _grow_span(x1, x2, (y2 - y1) * ratio_processing, image_width)
    return x1, y1, x2, y2


def _grow_span(start: int, end: int, length: float, limit: int) -> tuple[int, int]:
    """Grow [start, end) about its centre to `length`, shifted back inside [0, limit]."""
    diff = int(length - (end - start))
    start -= diff // 2
    end += diff - diff // 2
    if end >= limit:
        start -= end - limit
        end = limit
    if start < 0:
        end -= start
        start = 0
    return start, min(end, limit)


def apply_overlay(
    image: Image.Image, paste_loc: tuple[int, int, int, int] | None, overlay: Image.Image | None
) -> Image.Image:
    """Paste a generated image back and lay the untouched original over it (A1111 apply_overlay)."""
    if overlay is None:
        return image
    if paste_loc is not None:
        x, y, w, h = paste_loc
        base = Image.new("RGBA", (overlay.width, overlay.height))
        base.paste(resize_image(1, image, w, h), (x, y))
        image = base
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB")


def pil_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL RGB images -> [B, 3, H, W] in [-1, 1]."""
    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def tensor_to_pil(batch: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> PIL RGB images."""
    array = ((batch.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in array]
