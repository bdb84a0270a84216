"""Img2img preparation: init images, masks and an inpainting UNet's extra channels (step 2 of processing).

Follows A1111's Img2Img.init and the inpainting parts of Img2Img.sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from sdstudio.engine import images as imaging
from sdstudio.engine.job_context import GenerationModel
from sdstudio.engine.request import Img2ImgRequest
from sdstudio.errors import InvalidRequest

_Item = TypeVar("_Item")


@dataclass
class InitImages:
    """Prepared img2img inputs for the whole job."""

    images: list[Image.Image]  # resized / cropped to width x height (resize mode 3: kept at their own size)
    latent_mask: Image.Image | None = None  # white = repaint, at width x height
    overlays: list[Image.Image] = field(default_factory=list)
    paste_to: tuple[int, int, int, int] | None = None

    def batch_images(self, start: int, count: int) -> list[Image.Image]:
        """The init images of the batch whose first image is `start`."""
        return _batch_of(self.images, start, count)

    def batch_overlays(self, start: int, count: int) -> list[Image.Image]:
        """The inpainting overlays of the batch whose first image is `start`."""
        return _batch_of(self.overlays, start, count)


def prepare_init_images(request: Img2ImgRequest) -> InitImages:
    """Step 2: resize the init images, blur and crop the mask, fill masked content (A1111 Img2Img.init)."""
    width, height = request.width, request.height
    image_mask = request.mask
    crop = None
    paste_to = None
    mask_for_overlay = None
    if image_mask is not None:
        image_mask = _mask_at_image_size(image_mask.convert("L"), request.init_images[0])
        if request.inpainting_mask_invert:
            image_mask = ImageOps.invert(image_mask)
        if request.mask_blur_x > 0 or request.mask_blur_y > 0:
            image_mask = imaging.blur_mask(image_mask, request.mask_blur_x, request.mask_blur_y)
        if request.inpaint_full_res:
            mask_for_overlay = image_mask
            region = imaging.crop_region(image_mask, request.inpaint_full_res_padding)
            if region is None:
                raise InvalidRequest("mask", "the mask is empty: paint the area to change in white")
            crop = imaging.expand_crop_region(region, width, height, image_mask.width, image_mask.height)
            x1, y1, x2, y2 = crop
            image_mask = imaging.resize_image(2, image_mask.crop(crop), width, height)
            paste_to = (x1, y1, x2 - x1, y2 - y1)
        else:
            image_mask = imaging.resize_image(request.resize_mode, image_mask, width, height)
            array = (torch.tensor(list(image_mask.getdata()), dtype=torch.float32) * 2).clamp(0, 255)
            mask_for_overlay = Image.new("L", image_mask.size)
            mask_for_overlay.putdata([int(v) for v in array.tolist()])
    # Resize mode 3 ("Just resize (latent upscale)"): the image is encoded at its own size and
    # the latent is resized (GenerationJob.prepare_latents). With a mask the overlay must match the output, so
    # a masked request resizes the image instead, as mode 0.
    latent_resize = request.resize_mode == 3 and image_mask is None
    prepared: list[Image.Image] = []
    overlays: list[Image.Image] = []
    for source in request.init_images:
        image = ImageOps.exif_transpose(source).convert("RGB")
        if latent_resize:
            own = prepared[0].size if prepared else (max(8, image.width // 8 * 8), max(8, image.height // 8 * 8))
            image = imaging.resize_image(0, image, *own) if image.size != own else image
        elif crop is None:
            image = imaging.resize_image(request.resize_mode, image, width, height)
        if mask_for_overlay is not None:  # set exactly when there is a mask
            if mask_for_overlay.size != image.size:  # init images of different sizes (A1111 resizes the mask)
                mask_for_overlay = mask_for_overlay.resize(image.size, Image.Resampling.LANCZOS)
            masked = Image.new("RGBa", image.size)
            masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
            overlays.append(masked.convert("RGBA"))
        if crop is not None:
            image = imaging.resize_image(2, image.crop(crop), width, height)
        if image_mask is not None and request.inpainting_fill == 0:
            image = imaging.fill_masked(image, image_mask)
        prepared.append(image)
    return InitImages(images=prepared, latent_mask=image_mask, overlays=overlays, paste_to=paste_to)


def _mask_at_image_size(mask: Image.Image, init_image: Image.Image) -> Image.Image:
    """The mask stretched over the init image when their sizes differ, as A1111 resizes a mask to its image."""
    size = ImageOps.exif_transpose(init_image).size
    return mask if mask.size == size else mask.resize(size, Image.Resampling.LANCZOS)


def _batch_of(items: list[_Item], start: int, count: int) -> list[_Item]:
    """Items for one batch; a single item is repeated (A1111 uses one init image for all)."""
    if len(items) == 1:
        return items * count
    return [items[(start + i) % len(items)] for i in range(count)]


def latent_masks(
    mask_image: Image.Image, latent_shape: tuple[int, int], round_mask: bool, channels: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep mask, repaint mask) at latent size (A1111: mask = 1 - latmask, nmask = latmask)."""
    h, w = latent_shape
    latmask = (
        torch.tensor(
            list(mask_image.convert("L").resize((w, h), Image.Resampling.BICUBIC).getdata()), dtype=torch.float32
        ).view(1, 1, h, w)
        / 255
    )
    if round_mask:
        latmask = latmask.round()
    latmask = latmask.expand(1, channels, h, w).to(device)
    return 1.0 - latmask, latmask


def inpainting_image_conditioning(
    model: GenerationModel,
    pixels: torch.Tensor | None,
    mask: torch.Tensor | None,
    batch: int,
    latent_hw: tuple[int, int],
) -> torch.Tensor:
    """The 5 extra channels of an inpainting UNet: mask + latent of the masked image (A1111)."""
    h, w = latent_hw
    f = model.latent_factor
    if pixels is None:  # txt2img on an inpainting model: everything is to be painted
        pixels = torch.zeros(batch, 3, h * f, w * f)
        mask = torch.ones(batch, 1, h * f, w * f)
    assert mask is not None  # given together with pixels
    cond_mask = mask.round()
    masked = pixels * (1.0 - cond_mask)
    latent = model.encode_images(masked)
    mask_latent = F.interpolate(cond_mask.to(latent), size=(h, w))
    return torch.cat([mask_latent, latent], dim=1)
