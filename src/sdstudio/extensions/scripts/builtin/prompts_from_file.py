"""Prompts from file or textbox (A1111 scripts/prompts_from_file.py): one job per line.

Each non-blank line is a prompt, or A1111's option syntax (`--prompt "..." --steps 3 --seed 5`,
parsed by sdstudio.engine.prompt_lines, the parser the CLI's --from-file uses). A line's
prompt joins the request's prompt at its start or end. Every line is checked before the first
one runs: a bad line is an error naming it (A1111 would run it as a plain prompt). Output
folders cannot be set per line: a line comes from whoever sends the request.
"""

from __future__ import annotations

from typing import Any

from sdstudio.engine.prompt_lines import parse_prompt_lines
from sdstudio.engine.scripting import join_processed
from sdstudio.engine.seeds import fixed_seed
from sdstudio.errors import InvalidRequest
from sdstudio.extensions.scripts import (
    Checkbox,
    Control,
    File,
    Processed,
    Radio,
    Script,
    StableDiffusionProcessing,
    Textbox,
    process_images,
)

FIELD = "script_args"
REFUSED = {
    "outpath_samples": "cannot be set here; output folders are the settings' (outdir_samples)",
    "outpath_grids": "cannot be set here; output folders are the settings' (outdir_grids)",
}


def uploaded_text(file: Any) -> str | None:
    """The text of the File control's value (bytes from the web UI, text over the API), None when empty."""
    if file is None or file == "" or file == b"":
        return None
    if isinstance(file, (bytes, bytearray)):
        return bytes(file).decode("utf-8", errors="ignore")
    if isinstance(file, str):
        return file
    raise InvalidRequest(
        FIELD, f"Prompts from file or textbox: the uploaded file must be text, got {type(file).__name__}"
    )


def checkpoint_title(name: str, titles: list[str]) -> str | None:
    """The checkpoint a line's --sd_model means: its exact title, else the shortest title containing it."""
    if name in titles:
        return name
    matches = sorted((title for title in titles if name.lower() in title.lower()), key=len)
    return matches[0] if matches else None


def joined_prompt(line: str, base: str | list[str], position: str) -> str | list[str]:
    """A line's prompt with the request's (A1111: joined by a space, the line's first for "start")."""
    if not line or not base or isinstance(base, list):
        return line or base
    return f"{line} {base}" if position == "start" else f"{base} {line}"


class PromptsFromFile(Script):
    def title(self) -> str:
        return "Prompts from file or textbox"

    def ui(self, is_img2img: bool) -> list[Control]:
        return [
            Checkbox(label="Iterate seed every line", value=False, elem_id="checkbox_iterate"),
            Checkbox(label="Use same random seed for all lines", value=False, elem_id="checkbox_iterate_batch"),
            Radio(label="Insert prompts at the", choices=["start", "end"], value="start", elem_id="prompt_position"),
            Textbox(label="List of prompt inputs", value="", lines=2, elem_id="prompt_txt"),
            File(label="Upload prompt inputs", value=None, elem_id="file"),
        ]

    def run(  # type: ignore[override]
        self,
        p: StableDiffusionProcessing,
        checkbox_iterate: bool,
        checkbox_iterate_batch: bool,
        prompt_position: str,
        prompt_txt: str,
        file: Any = None,
        *_: Any,
    ) -> Processed:
        if prompt_position not in ("start", "end"):
            raise InvalidRequest(
                FIELD, f"Prompts from file or textbox: insert prompts at start or end, not {prompt_position!r}"
            )
        text = uploaded_text(file)
        lines = parse_prompt_lines((text if text is not None else prompt_txt or "").splitlines(), FIELD, REFUSED)
        if not lines:
            raise InvalidRequest(FIELD, "Prompts from file or textbox: the list of prompt inputs is empty")
        services = p.services
        assert services is not None  # set for every p of a running job
        p.do_not_save_grid = True
        jobs = [(fields, self.line_job(p, number, fields, prompt_position)) for number, fields in lines]
        services.set_job_count(sum(job.n_iter for _, job in jobs))
        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = fixed_seed(-1)

        results = []
        for fields, job in jobs:
            if services.interrupted:
                break
            if "seed" not in fields:
                job.seed = p.seed
            results.append(process_images(job))
            if checkbox_iterate and isinstance(p.seed, int):
                p.seed += p.batch_size * p.n_iter
        processed = join_processed(results)
        processed.interrupted = processed.interrupted or services.interrupted
        return processed

    def line_job(
        self, p: StableDiffusionProcessing, number: int, fields: dict[str, Any], position: str
    ) -> StableDiffusionProcessing:
        """The `p` of one line: the request's, with the line's fields; checked now (an error names the line)."""
        job = p.copy()
        for name, value in fields.items():
            if name == "sd_model":
                assert p.services is not None
                title = checkpoint_title(value, p.services.checkpoint_names())
                if title is None:
                    raise InvalidRequest(FIELD, f"line {number}: --sd_model: no checkpoint matches {value!r}")
                job.override_settings = {**job.override_settings, "sd_model_checkpoint": title}
            else:
                setattr(job, name, value)
        job.prompt = joined_prompt(fields.get("prompt", ""), p.prompt, position)
        job.negative_prompt = joined_prompt(fields.get("negative_prompt", ""), p.negative_prompt, position)
        try:
            job.to_request()
        except InvalidRequest as exc:
            raise InvalidRequest(FIELD, f"line {number}: {exc}") from None
        return job
