"""SD upscale (A1111 scripts/sd_upscale.py): upscale the init image, then img2img it tile by tile and blend."""

from __future__ import annotations

import math
from typing import Any

from PIL import Image

from sdstudio.errors import InvalidRequest
from sdstudio.extensions.scripts import (
    HTML,
    Processed,
    Radio,
    Script,
    Slider,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    fix_seed,
    process_images,
    script_result,
    seed_of,
)
from sdstudio.extensions.scripts.tiles import combine_grid, split_grid, tile_counts


class SDUpscaleScript(Script):
    """Upscales with an image upscaler, then lets the model redraw each width × height tile."""

    def title(self) -> str:
        return "SD upscale"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list[Any]:
        upscalers = self.lists.upscaler_names()
        return [
            HTML(
                value='<p style="margin-bottom:0.75em">Will upscale the image by the selected scale factor; '
                "use width and height sliders to set tile size</p>"
            ),
            Slider(label="Tile overlap", value=64, minimum=0, maximum=256, step=16),
            Radio(label="Upscaler", choices=upscalers, value=upscalers[0] if upscalers else "None", type="index"),
            Slider(label="Scale Factor", value=2, minimum=0, maximum=4, step=1),
        ]

    def run(
        self,
        p: StableDiffusionProcessing,
        _info: Any,
        overlap: int,
        upscaler_index: int,
        scale_factor: float,
        *_: Any,
    ) -> Processed:
        fix_seed(p)
        job = p.copy()
        assert isinstance(job, StableDiffusionProcessingImg2Img)  # shown on the img2img tab only
        services = p.services
        names = services.upscaler_names() if services is not None else []
        if not 0 <= upscaler_index < len(names):
            raise InvalidRequest("script_args", f"SD upscale: Upscaler (2): no upscaler number {upscaler_index}")
        upscaler = names[upscaler_index]
        overlap = int(overlap)
        try:
            tile_counts(job.width, job.height, job.width, job.height, overlap)
        except ValueError:
            raise InvalidRequest(
                "script_args",
                f"SD upscale: Tile overlap (1) is {overlap}; it must be below the tile size, width × height "
                f"{job.width}x{job.height}",
            ) from None
        job.extra_generation_params["SD upscale overlap"] = overlap
        job.extra_generation_params["SD upscale upscaler"] = upscaler

        init = job.init_images[0].convert("RGB")
        if upscaler != "None" and services is not None:  # "None" tiles the image at its own size, as A1111
            if scale_factor <= 0:
                raise InvalidRequest("script_args", "SD upscale: Scale Factor (3) must be above 0")
            # A1111's Upscaler.upscale: the size scaled and rounded down to a multiple of 8.
            size = (int(init.width * scale_factor) // 8 * 8, int(init.height * scale_factor) // 8 * 8)
            if min(size) < 8:
                raise InvalidRequest(
                    "script_args", f"SD upscale: Scale Factor (3) {scale_factor} makes the image empty"
                )
            init = services.upscale(init, upscaler, *size)
        grid = split_grid(init, tile_w=job.width, tile_h=job.height, overlap=overlap)

        batch_size, upscale_count = job.batch_size, job.n_iter
        job.n_iter = 1
        job.do_not_save_grid = job.do_not_save_samples = True
        if isinstance(job.prompt, list):  # tiles share the first prompt of a list
            job.prompt = job.prompt[0]
        if isinstance(job.negative_prompt, list):
            job.negative_prompt = job.negative_prompt[0]
        work = [tile.image for _, tile in grid.tiles()]
        batch_count = math.ceil(len(work) / batch_size)
        if services is not None:
            services.set_job_count(batch_count * upscale_count)

        jobs: list[Processed] = []
        images: list[Image.Image] = []
        seeds: list[int] = []
        saved = []
        for n in range(upscale_count):
            start_seed = seed_of(p.seed) + n
            job.seed = start_seed
            results: list[Image.Image] = []
            for start in range(0, len(work), batch_size):
                job.init_images = work[start : start + batch_size]
                job.batch_size = len(job.init_images)
                processed = process_images(job)
                jobs.append(processed)
                job.seed = processed.seeds[0] + 1 if processed.seeds else job.seed + 1
                results += processed.images[processed.index_of_first_image :]
            for index, (_row, tile) in enumerate(grid.tiles()):
                # A tile an interrupted job did not make stays black, as in A1111.
                tile.image = results[index] if index < len(results) else Image.new("RGB", (job.width, job.height))
            combined = combine_grid(grid)
            images.append(combined)
            seeds.append(start_seed)
            if services is not None:
                path = services.save_image(p, combined, start_seed, _infotext(jobs))
                saved += [path] if path is not None else []
            if services is not None and services.interrupted:
                break
        infotext = _infotext(jobs)
        if p.settings.enable_pnginfo and infotext:
            for image in images:
                image.info["parameters"] = infotext
        return script_result(jobs, images, [infotext] * len(images), seeds, saved_paths=saved)


def _infotext(jobs: list[Processed]) -> str:
    """The first tile's infotext: what A1111 gives the upscaled image."""
    return jobs[0].infotexts[0] if jobs and jobs[0].infotexts else ""
