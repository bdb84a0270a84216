"""Prompt matrix (A1111 scripts/prompt_matrix.py): every combination of a prompt's `|` parts, in one grid.

`a red circle|blue background|small` makes 2^(3-1) = 4 images: the first part alone, then
with each combination of the optional parts (bit k of the image's index takes part k+1).
The images run in batches of the request's batch size; the grid has the first half of the
optional parts as a legend over its columns and the rest beside its rows, struck through
where a part is absent.
"""

from __future__ import annotations

from typing import Any

from sdstudio.engine.saving import image_grid
from sdstudio.engine.scripting import insert_grid, join_processed
from sdstudio.engine.seeds import fixed_seed
from sdstudio.errors import InvalidRequest
from sdstudio.extensions.scripts import (
    Checkbox,
    Control,
    Processed,
    Radio,
    Script,
    Slider,
    StableDiffusionProcessing,
    process_images,
)
from sdstudio.extensions.scripts.grid_legend import draw_prompt_matrix

PROMPT_TYPES = ("positive", "negative")
DELIMITERS = {"comma": ", ", "space": " "}


def matrix_prompts(prompt: str, put_at_start: bool, delimiter: str) -> list[str]:
    """The prompt of each cell: parts[0] with the optional parts whose bits are set in the cell's index."""
    parts = prompt.split("|")
    optional = [text.strip().strip(",") for text in parts[1:]]
    prompts = []
    for index in range(1 << len(optional)):
        chosen = [text for bit, text in enumerate(optional) if index & (1 << bit)]
        ordered = [*chosen, parts[0]] if put_at_start else [parts[0], *chosen]
        prompts.append(delimiter.join(ordered))
    return prompts


class PromptMatrix(Script):
    def title(self) -> str:
        return "Prompt matrix"

    def ui(self, is_img2img: bool) -> list[Control]:
        return [
            Checkbox(label="Set at prompt start", value=False, elem_id="put_at_start"),
            Checkbox(label="Random seeds", value=False, elem_id="different_seeds"),
            Radio(label="Prompt type", choices=list(PROMPT_TYPES), value="positive", elem_id="prompt_type"),
            Radio(label="Joining char", choices=list(DELIMITERS), value="comma", elem_id="variations_delimiter"),
            Slider(label="Grid margins", value=0, minimum=0, maximum=500, step=2, elem_id="margin_size"),
        ]

    def run(  # type: ignore[override]
        self,
        p: StableDiffusionProcessing,
        put_at_start: bool,
        different_seeds: bool,
        prompt_type: str,
        variations_delimiter: str,
        margin_size: int,
        *_: Any,
    ) -> Processed:
        if prompt_type not in PROMPT_TYPES:
            raise InvalidRequest(
                "script_args", f"Prompt matrix: prompt type must be positive or negative, not {prompt_type!r}"
            )
        if variations_delimiter not in DELIMITERS:
            raise InvalidRequest(
                "script_args", f"Prompt matrix: joining char must be comma or space, not {variations_delimiter!r}"
            )
        source = p.prompt if prompt_type == "positive" else p.negative_prompt
        prompt = source[0] if isinstance(source, list) else source
        parts = prompt.split("|")
        count = 1 << (len(parts) - 1)
        limit = p.settings.limit_images_per_job
        if limit and count > limit:
            raise InvalidRequest(
                "prompt" if prompt_type == "positive" else "negative_prompt",
                f"Prompt matrix: {len(parts) - 1} optional parts make {count} images, over the limit of {limit} "
                "per request (setting limit_images_per_job)",
            )
        prompts = matrix_prompts(prompt, put_at_start, DELIMITERS[variations_delimiter])
        services = p.services
        assert services is not None  # set for every p of a running job
        p.seed = fixed_seed(p.seed[0] if isinstance(p.seed, list) else p.seed)  # A1111 fix_seed
        p.subseed = fixed_seed(p.subseed[0] if isinstance(p.subseed, list) else p.subseed)
        seeds = [p.seed + (index if different_seeds else 0) for index in range(count)]
        jobs = _jobs(count, max(1, p.batch_size))
        services.set_job_count(sum(n_iter for _, _, n_iter in jobs))

        results = []
        for start, batch_size, n_iter in jobs:
            job = p.copy()
            end = start + batch_size * n_iter
            job.batch_size, job.n_iter, job.seed = batch_size, n_iter, seeds[start:end]
            if prompt_type == "positive":
                job.prompt = prompts[start:end]
            else:
                job.negative_prompt = prompts[start:end]
            job.do_not_save_grid = True  # the matrix's own grid replaces the job's
            results.append(process_images(job))
            if services.interrupted:
                break
        processed = join_processed(results)

        images = processed.images
        if len(images) == count:
            rows = 1 << ((len(parts) - 1) // 2)
            width, height = images[0].size
            grid = draw_prompt_matrix(image_grid(images, rows=rows), width, height, parts, int(margin_size))
            infotext = processed.infotexts[0] if processed.infotexts else None
            path = services.save_grid(p, grid, infotext)
            insert_grid(processed, grid, infotext, path)
        return processed


def _jobs(count: int, batch_size: int) -> list[tuple[int, int, int]]:
    """(first image, batch size, batches) of each job: the whole batches, then a last smaller one (as A1111's)."""
    whole = count // batch_size
    jobs = [(0, batch_size, whole)] if whole else []
    if count > whole * batch_size:
        jobs.append((whole * batch_size, count - whole * batch_size, 1))
    return jobs
