"""Loopback (A1111 scripts/loopback.py): each image is the init image of the next, the strength moving on a curve."""

from __future__ import annotations

import math
from typing import Any

from sdstudio.engine.saving import image_grid
from sdstudio.extensions.scripts import (
    Dropdown,
    Processed,
    Script,
    Slider,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    fix_seed,
    process_images,
    script_result,
)

CURVES = ["Aggressive", "Linear", "Lazy"]
INTERROGATORS = {"None": None, "CLIP": "clip", "DeepBooru": "deepdanbooru"}
"""A1111's "Append interrogated prompt" choices -> the interrogation model."""


def curve_position(curve: str, progress: float) -> float:
    """How far (0..1) along the way to the final strength a loop is, `progress` being its share of the loops."""
    if curve == "Aggressive":  # most of the change early
        return math.sin(progress * math.pi / 2)
    if curve == "Lazy":  # most of the change late
        return 1 - math.cos(progress * math.pi / 2)
    return progress


def loop_strength(initial: float, final: float, curve: str, loop: int, loops: int) -> float:
    """The denoising strength of loop number `loop` (0-based) of `loops`: `initial` first, `final` last."""
    if loops == 1:
        return initial
    return initial + (final - initial) * curve_position(curve, loop / (loops - 1))


class LoopbackScript(Script):
    """Runs img2img `loops` times, each time on the image the last run made."""

    def title(self) -> str:
        return "Loopback"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list[Any]:
        return [
            Slider(label="Loops", value=4, minimum=1, maximum=32, step=1, elem_id="loops"),
            Slider(
                label="Final denoising strength",
                value=0.5,
                minimum=0,
                maximum=1,
                step=0.01,
                elem_id="final_denoising_strength",
            ),
            Dropdown(label="Denoising strength curve", value="Linear", choices=list(CURVES)),
            Dropdown(label="Append interrogated prompt at each iteration", value="None", choices=list(INTERROGATORS)),
        ]

    def run(
        self,
        p: StableDiffusionProcessing,
        loops: int,
        final_denoising_strength: float,
        denoising_curve: str,
        append_interrogation: str,
        *_: Any,
    ) -> Processed:
        loops = max(1, int(loops))
        interrogator = INTERROGATORS.get(str(append_interrogation), None)
        fix_seed(p)
        job = p.copy()
        assert isinstance(job, StableDiffusionProcessingImg2Img)  # shown on the img2img tab only
        batch_count = job.n_iter
        job.extra_generation_params.update(
            {"Final denoising strength": final_denoising_strength, "Denoising curve": denoising_curve}
        )
        job.batch_size = job.n_iter = 1
        job.do_not_save_grid = True
        if isinstance(job.prompt, list):  # one job makes one image: the first prompt of a list
            job.prompt = job.prompt[0]
        if isinstance(job.negative_prompt, list):
            job.negative_prompt = job.negative_prompt[0]
        initial_strength = job.denoising_strength
        original_init_images, original_prompt, original_fill = list(job.init_images), job.prompt, job.inpainting_fill
        services = p.services
        if services is not None:
            services.set_job_count(loops * batch_count)

        def interrupted() -> bool:
            return services is not None and services.interrupted

        jobs: list[Processed] = []
        history: list[tuple[Any, str, int]] = []  # (image, infotext, seed) of what is returned
        for _batch in range(batch_count):
            job.init_images = list(original_init_images)  # each batch starts again from the given image
            job.denoising_strength = initial_strength
            last: tuple[Any, str, int] | None = None
            for loop in range(loops):
                if interrogator is not None and services is not None:
                    caption = services.interrogate(job.init_images[0], interrogator)
                    job.prompt = f"{original_prompt}, {caption}" if original_prompt else caption
                processed = process_images(job)
                jobs.append(processed)
                first = processed.index_of_first_image
                if interrupted() or len(processed.images) <= first:
                    break
                image, seed = processed.images[first], processed.seeds[0]
                last = (image, processed.infotexts[0] if processed.infotexts else "", seed)
                job.seed = seed + 1
                if loop + 1 < loops:
                    job.denoising_strength = loop_strength(
                        initial_strength, final_denoising_strength, denoising_curve, loop + 1, loops
                    )
                job.init_images = [image]
                job.inpainting_fill = 1  # "original": later loops start from the last image where masked
                if batch_count == 1:
                    history.append(last)
            if batch_count > 1 and last is not None and not interrupted():
                history.append(last)  # several batches: the last image of each
            job.inpainting_fill = original_fill
            if interrupted():
                break

        grid = None
        if len(history) > 1:
            grid = image_grid([image for image, _, _ in history], rows=1)
            if services is not None:
                services.save_grid(p, grid, history[0][1])
            if not p.settings.return_grid:
                grid = None
        return script_result(
            jobs,
            [image for image, _, _ in history],
            [infotext for _, infotext, _ in history],
            [seed for _, _, seed in history],
            grid=grid,
        )
