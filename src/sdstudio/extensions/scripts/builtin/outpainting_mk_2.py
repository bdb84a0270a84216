"""Outpainting mk2 (A1111 scripts/outpainting_mk_2.py): grow the image side by side over noise shaped like it.

Each direction is one inpainting job: the canvas grows by the expansion, the new strip is
filled with noise whose spectrum and colours follow the image (g-diffuser's matched noise,
as A1111 uses it), and the model repaints the strip with "original" as masked content.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sdstudio.engine.saving import image_grid
from sdstudio.extensions.scripts import (
    HTML,
    CheckboxGroup,
    Processed,
    Script,
    Slider,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    process_images,
    script_result,
    seed_of,
)
from sdstudio.extensions.scripts.tiles import outpaint_sides

DIRECTIONS = ["left", "right", "up", "down"]


def _centred_fft(data: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Orthonormal 2-D (inverse) FFT of each channel with the zero frequency in the middle."""
    transform = np.fft.ifft2 if inverse else np.fft.fft2
    return np.fft.ifftshift(transform(np.fft.fftshift(data, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1))


def _falloff_window(rows: int, cols: int) -> np.ndarray:
    """A soft low-pass window, 1 in the middle, falling as 1 / ((x² + 1)(y² + 1)) over an aspect-corrected square."""
    shortest = min(rows, cols)
    x = (np.arange(rows) / rows * 2 - 1) * (rows / shortest)
    y = (np.arange(cols) / cols * 2 - 1) * (cols / shortest)
    return 1 / np.outer(x**2 + 1, y**2 + 1)


def _match_histogram(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` (N × C) remapped channel by channel so that their distribution is that of `reference` (M × C)."""
    matched = np.empty_like(values)
    for channel in range(values.shape[1]):
        source_levels, inverse, source_counts = np.unique(values[:, channel], return_inverse=True, return_counts=True)
        reference_levels, reference_counts = np.unique(reference[:, channel], return_counts=True)
        source_quantiles = np.cumsum(source_counts) / values.shape[0]
        reference_quantiles = np.cumsum(reference_counts) / reference.shape[0]
        matched[:, channel] = np.interp(source_quantiles, reference_quantiles, reference_levels)[inverse.ravel()]
    return matched


def matched_noise(
    image: np.ndarray, mask: np.ndarray, noise_q: float = 1.0, color_variation: float = 0.05
) -> np.ndarray:
    """`image` (H × W × 3 in [0, 1]) with its masked part (`mask`, same shape, 1 = new) filled with matched noise.

    The noise takes the amplitude spectrum of the known part (raised to `noise_q`: lower keeps
    finer detail), `color_variation` of colour against grey, and the known part's colour
    histogram. A fixed generator keeps the result a function of the image alone.
    """
    grey_mask = mask.mean(axis=2)
    to_fill, known = grey_mask > 1e-6, grey_mask < 1e-3
    windowed = image * (1 - mask)
    peak = windowed.max()
    if peak > 0:
        windowed = windowed / peak
    windowed = windowed + image.mean() * mask  # the image's mean colour where it is unknown: a cleaner spectrum
    source = _centred_fft(windowed)
    amplitude = np.abs(source)
    phase = np.divide(source, amplitude, out=np.zeros_like(source), where=amplitude > 0)

    rng = np.random.default_rng(0)
    noise = rng.random(image.shape)
    grey = noise.mean(axis=2, keepdims=True)
    noise = noise * color_variation + grey * (1 - color_variation)
    noise = np.real(_centred_fft(_centred_fft(noise) * _falloff_window(*image.shape[:2])[..., None], inverse=True))
    shaped = np.real(_centred_fft(np.abs(_centred_fft(noise)) ** 2 * amplitude**noise_q * phase, inverse=True))
    shaped = shaped - shaped.min()
    if shaped.max() > 0:
        shaped = shaped / shaped.max()
    if to_fill.any() and known.any():
        shaped[to_fill] = _match_histogram(shaped[to_fill], image[known])
    return np.clip(image * (1 - mask) + shaped * mask, 0, 1)


def _ceil_to(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


class OutpaintingMk2Script(Script):
    """Outpaints one direction at a time over matched noise."""

    def title(self) -> str:
        return "Outpainting mk2"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list[Any]:
        return [
            HTML(
                value='<p style="margin-bottom:0.75em">Recommended settings: Sampling Steps: 80-100, '
                "Sampler: Euler a, Denoising strength: 0.8</p>"
            ),
            Slider(label="Pixels to expand", value=128, minimum=8, maximum=256, step=8, elem_id="pixels"),
            Slider(label="Mask blur", value=8, minimum=0, maximum=64, step=1, elem_id="mask_blur"),
            CheckboxGroup(
                label="Outpainting direction", value=list(DIRECTIONS), choices=list(DIRECTIONS), elem_id="direction"
            ),
            Slider(
                label="Fall-off exponent (lower=higher detail)",
                value=1.0,
                minimum=0.0,
                maximum=4.0,
                step=0.01,
                elem_id="noise_q",
            ),
            Slider(label="Color variation", value=0.05, minimum=0.0, maximum=1.0, step=0.01, elem_id="color_variation"),
        ]

    def run(
        self,
        p: StableDiffusionProcessing,
        _info: Any,
        pixels: int,
        mask_blur: int,
        direction: list[str],
        noise_q: float,
        color_variation: float,
        *_: Any,
    ) -> Processed:
        job = p.copy()
        assert isinstance(job, StableDiffusionProcessingImg2Img)  # shown on the img2img tab only
        process_width, process_height = job.width, job.height
        job.inpaint_full_res = False
        job.inpainting_fill = 1  # "original": the matched noise is the starting point
        job.do_not_save_samples = job.do_not_save_grid = True
        left, right, up, down = (int(pixels) if side in direction else 0 for side in DIRECTIONS)
        blur_x = int(mask_blur) if left or right else 0
        blur_y = int(mask_blur) if up or down else 0
        job.mask_blur = None  # the two directions' blurs below apply
        job.mask_blur_x, job.mask_blur_y = blur_x * 4, blur_y * 4
        init = job.init_images[0].convert("RGB")
        left, right = outpaint_sides(init.width, left, right)
        up, down = outpaint_sides(init.height, up, down)

        jobs: list[Processed] = []

        def expand(images: list[Image.Image], amount: int, side: str) -> list[Image.Image]:
            """One inpainting job growing every image by `amount` pixels on `side`."""
            horizontal = side in ("left", "right")
            grow_x, grow_y = (amount, 0) if horizontal else (0, amount)
            canvases: list[Image.Image] = []
            to_process: list[Image.Image] = []
            mask = None
            for image in images:
                new_w, new_h = image.width + grow_x, image.height + grow_y
                canvas_w, canvas_h = _ceil_to(new_w, 64), _ceil_to(new_h, 64)
                canvas = Image.new("RGB", (canvas_w, canvas_h))
                canvas.paste(image, (grow_x if side == "left" else 0, grow_y if side == "up" else 0))
                mask = _expansion_mask((canvas_w, canvas_h), (new_w, new_h), amount, blur_x, blur_y, side)
                noised = matched_noise(
                    np.asarray(canvas, dtype=np.float64) / 255,
                    np.asarray(mask, dtype=np.float64) / 255,
                    noise_q,
                    color_variation,
                )
                canvases.append(Image.fromarray(np.clip(noised * 255, 0, 255).astype(np.uint8), mode="RGB"))
                # The job covers the new strip and as much of the image next to it as the job's size allows
                # (rounded up to the multiple of 8 sdstudio's sizes take).
                crop_w = min(process_width, _ceil_to(new_w, 8)) if horizontal else canvas_w
                crop_h = canvas_h if horizontal else min(process_height, _ceil_to(new_h, 8))
                job.width, job.height = crop_w, crop_h
                region = (
                    0 if side == "left" else canvas_w - crop_w,
                    0 if side == "up" else canvas_h - crop_h,
                    crop_w if side == "left" else canvas_w,
                    crop_h if side == "up" else canvas_h,
                )
                mask = mask.crop(region)
                to_process.append(canvases[-1].crop(region))
            job.init_images, job.mask = to_process, mask
            processed = process_images(job)
            jobs.append(processed)
            made = processed.images[processed.index_of_first_image :]
            grown = []
            for index, canvas in enumerate(canvases):
                if index < len(made):
                    result = made[index]
                    at = (
                        0 if side == "left" else canvas.width - result.width,
                        0 if side == "up" else canvas.height - result.height,
                    )
                    canvas.paste(result, at)
                grown.append(canvas.crop((0, 0, images[index].width + grow_x, images[index].height + grow_y)))
            return grown

        batch_count, batch_size = job.n_iter, job.batch_size
        job.n_iter = 1
        services = p.services
        if services is not None:
            services.set_job_count(batch_count * sum(1 for amount in (left, right, up, down) if amount > 0))
        finished: list[Image.Image] = []
        for _batch in range(batch_count):
            images = [init] * batch_size
            for amount, side in ((left, "left"), (right, "right"), (up, "up"), (down, "down")):
                if amount > 0:
                    images = expand(images, amount, side)
            finished += images
            if services is not None and services.interrupted:
                break
        return _outpainting_result(p, jobs, finished)


def _expansion_mask(canvas: tuple[int, int], grown: tuple[int, int], amount: int, blur_x: int, blur_y: int, side: str):
    """The inpainting mask of one expansion: white (repaint) everywhere but the old image, inset by the blur."""
    width, height = canvas
    mask = Image.new("RGB", canvas, "white")
    ImageDraw.Draw(mask).rectangle(
        (
            amount + blur_x if side == "left" else 0,
            amount + blur_y if side == "up" else 0,
            width - amount - blur_x if side == "right" else grown[0],
            height - amount - blur_y if side == "down" else grown[1],
        ),
        fill="black",
    )
    return mask


def _outpainting_result(p: StableDiffusionProcessing, jobs: list[Processed], images: list[Image.Image]) -> Processed:
    """The grown images (with their grid when several), saved as the settings say (A1111's outpainting scripts)."""
    infotext = jobs[0].infotexts[0] if jobs and jobs[0].infotexts else ""
    seed = jobs[0].seeds[0] if jobs and jobs[0].seeds else seed_of(p.seed)
    settings, services = p.settings, p.services
    saved = []
    for image in images:
        if settings.enable_pnginfo and infotext:
            image.info["parameters"] = infotext
        path = services.save_image(p, image, seed, infotext) if services is not None else None
        saved += [path] if path is not None else []
    grid = None
    if len(images) > 1:  # A1111's grid_only_if_multiple
        grid = image_grid(images)
        if services is not None:
            services.save_grid(p, grid, infotext)
        if not settings.return_grid:
            grid = None
    return script_result(jobs, images, [infotext] * len(images), [seed] * len(images), grid=grid, saved_paths=saved)
