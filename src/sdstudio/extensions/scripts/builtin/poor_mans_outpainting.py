"""Poor man's outpainting (A1111 scripts/poor_mans_outpainting.py): grow the canvas, inpaint the tiles at its edge."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from sdstudio.errors import InvalidRequest
from sdstudio.extensions.scripts import (
    CheckboxGroup,
    Processed,
    Radio,
    Script,
    Slider,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    process_images,
    script_result,
    seed_of,
)
from sdstudio.extensions.scripts.tiles import combine_grid, outpaint_sides, split_grid, tile_counts

DIRECTIONS = ["left", "right", "up", "down"]
MASKED_CONTENT = ["fill", "original", "latent noise", "latent nothing"]


def _inner_mask(size: tuple[int, int], sides: tuple[int, int, int, int], inset: int) -> Image.Image:
    """White (repaint) outside the old image, black over it, its grown edges moved in by `inset`."""
    left, up, right, down = sides
    width, height = size
    mask = Image.new("L", size, "white")
    ImageDraw.Draw(mask).rectangle(
        (
            left + (inset if left else 0),
            up + (inset if up else 0),
            width - right - (inset if right else 0),
            height - down - (inset if down else 0),
        ),
        fill="black",
    )
    return mask


class PoorMansOutpaintingScript(Script):
    """Outpaints by inpainting the width × height tiles of the grown canvas that touch the new border."""

    def title(self) -> str:
        return "Poor man's outpainting"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list[Any]:
        return [
            Slider(label="Pixels to expand", value=128, minimum=8, maximum=256, step=8, elem_id="pixels"),
            Slider(label="Mask blur", value=4, minimum=0, maximum=64, step=1, elem_id="mask_blur"),
            Radio(
                label="Masked content",
                value="fill",
                choices=list(MASKED_CONTENT),
                type="index",
                elem_id="inpainting_fill",
            ),
            CheckboxGroup(
                label="Outpainting direction", value=list(DIRECTIONS), choices=list(DIRECTIONS), elem_id="direction"
            ),
        ]

    def run(
        self,
        p: StableDiffusionProcessing,
        pixels: int,
        mask_blur: int,
        inpainting_fill: int,
        direction: list[str],
        *_: Any,
    ) -> Processed:
        job = p.copy()
        assert isinstance(job, StableDiffusionProcessingImg2Img)  # shown on the img2img tab only
        pixels, mask_blur = int(pixels), int(mask_blur)
        try:
            tile_counts(job.width, job.height, job.width, job.height, pixels)
        except ValueError:
            raise InvalidRequest(
                "script_args",
                f"Poor man's outpainting: Pixels to expand (0) is {pixels}; the tiles overlap by that much, so it "
                f"must be below width and height ({job.width}x{job.height})",
            ) from None
        job.mask_blur = mask_blur * 2
        job.inpainting_fill = inpainting_fill
        job.inpaint_full_res = False
        job.n_iter = job.batch_size = 1
        job.do_not_save_grid = job.do_not_save_samples = True

        init = job.init_images[0].convert("RGB")
        left, right = outpaint_sides(init.width, *(pixels if side in direction else 0 for side in ("left", "right")))
        up, down = outpaint_sides(init.height, *(pixels if side in direction else 0 for side in ("up", "down")))
        canvas = Image.new("RGB", (init.width + left + right, init.height + up + down))
        canvas.paste(init, (left, up))
        sides = (left, up, right, down)
        mask = _inner_mask(canvas.size, sides, mask_blur * 2)
        # A1111 makes a latent mask (inset by mask_blur // 2) too; sdstudio's engine blends with `mask` itself.

        grid = split_grid(canvas, tile_w=job.width, tile_h=job.height, overlap=pixels)
        mask_grid = split_grid(mask, tile_w=job.width, tile_h=job.height, overlap=pixels)

        def inside_old_image(y: int, height: int, x: int, width: int) -> bool:
            return x >= left and x + width <= canvas.width - right and y >= up and y + height <= canvas.height - down

        work = [
            (tile, mask_tile.image)
            for (row, tile), (_, mask_tile) in zip(grid.tiles(), mask_grid.tiles())
            if not inside_old_image(row.y, row.height, tile.x, tile.width)
        ]
        services = p.services
        if services is not None:
            services.set_job_count(len(work))
        jobs: list[Processed] = []
        for tile, tile_mask in work:
            job.init_images, job.mask = [tile.image], tile_mask
            processed = process_images(job)
            jobs.append(processed)
            made = processed.images[processed.index_of_first_image :]
            if made:
                tile.image = made[0]
            else:  # an interrupted job: the tile stays black, as in A1111
                tile.image = Image.new("RGB", (job.width, job.height))
            if processed.seeds:
                job.seed = processed.seeds[0] + 1
            if services is not None and services.interrupted:
                break
        combined = combine_grid(grid)

        infotext = jobs[0].infotexts[0] if jobs and jobs[0].infotexts else ""
        seed = jobs[0].seeds[0] if jobs and jobs[0].seeds else seed_of(p.seed)
        if p.settings.enable_pnginfo and infotext:
            combined.info["parameters"] = infotext
        path = services.save_image(p, combined, seed, infotext) if services is not None else None
        return script_result(jobs, [combined], [infotext], [seed], saved_paths=[path] if path else [])
