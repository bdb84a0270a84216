"""The parts txt2img and img2img share: prompt row, sampling controls, output panel, Generate.

Components are kept in dicts keyed by the A1111 request field they fill (`steps`,
`cfg_scale`, `hr_scale`, ...), so building a request and pasting infotext are both
name-to-name (no positional coupling between the UI and the worker). Generate queues the
work on the shared job queue and redraws the progress bar and live preview until the
job finishes; Interrupt and Skip act on whatever the queue runs now, as in A1111.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr
from pydantic import BaseModel

from sdstudio.engine.job_queue import submit_generation
from sdstudio.engine.request import SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER
from sdstudio.errors import SdStudioError
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.jobs import client_queue, follow_job, status_html
from sdstudio.ui.scripts import ScriptPanel, build_script_panel

if TYPE_CHECKING:
    from sdstudio.engine.scripting import ScriptSelection

log = logging.getLogger(__name__)

DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_STEPS = 20  # A1111's UI default (the API's is 50)
INT_FIELDS = {
    "steps",
    "width",
    "height",
    "n_iter",
    "batch_size",
    "seed",
    "subseed",
    "seed_resize_from_w",
    "seed_resize_from_h",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "mask_blur",
    "inpaint_full_res_padding",
    "resize_mode",
    "inpainting_fill",
    "inpainting_mask_invert",
}


def sampler_choices() -> tuple[list[str], list[str]]:
    """Sampler names and schedule-type labels from the engine's tables."""
    from sdstudio.engine.samplers import sampler_names, schedule_type_labels

    return sampler_names(), schedule_type_labels()


def infotext_html(infotext: str) -> str:
    """Infotext as paragraphs, escaped (A1111's plaintext_to_html)."""
    if not infotext:
        return ""
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in infotext.split("\n"))
    return f'<div class="sdstudio-infotext">{lines}</div>'


@dataclass
class PromptRow:
    """Prompt, negative prompt with token counters, styles, and the Generate/Interrupt/Skip buttons."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    prompt_tokens: gr.HTML
    negative_tokens: gr.HTML
    styles: gr.Dropdown
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button


@dataclass
class OutputPanel:
    """Progress bar, gallery, infotext and the send-to buttons of one tab."""

    progress: gr.HTML
    gallery: gr.Gallery
    infotext: gr.HTML
    info: gr.State  # {"infotexts": [...], "index_of_first_image": n, "seeds": [...], "subseeds": [...]}
    selected: gr.State  # gallery index the user clicked
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    send_to_extras: gr.Button


@dataclass
class GenerationTab:
    """Everything a generation tab exposes to the other tabs (for send-to and paste)."""

    kind: str
    row: PromptRow
    fields: dict[str, Any]  # request field name -> component
    output: OutputPanel
    extra: dict[str, Any] = field(default_factory=dict)  # tab-specific components (img2img's images)
    scripts: ScriptPanel | None = None  # the Script dropdown and always-on scripts

    def field_names(self) -> list[str]:
        return list(self.fields)

    def field_components(self) -> list[Any]:
        return list(self.fields.values())


def build_prompt_row(kind: str, backend: UiBackend) -> PromptRow:
    """The top row: prompts on the left, Generate and styles on the right (A1111's layout)."""
    with gr.Row(elem_id=f"{kind}_toprow", equal_height=False):
        with gr.Column(scale=6, min_width=400):
            prompt = gr.Textbox(
                label="Prompt",
                lines=3,
                max_lines=12,
                elem_id=f"{kind}_prompt",
                placeholder="Prompt (Ctrl+Enter to generate)",
            )
            prompt_tokens = gr.HTML(
                _counter_html("0/75"),
                elem_id=f"{kind}_token_counter",
                elem_classes="sdstudio-token-counter",
                padding=False,
            )
            negative_prompt = gr.Textbox(
                label="Negative prompt",
                lines=2,
                max_lines=8,
                elem_id=f"{kind}_neg_prompt",
                placeholder="Negative prompt",
            )
            negative_tokens = gr.HTML(
                _counter_html("0/75"),
                elem_id=f"{kind}_negative_token_counter",
                elem_classes="sdstudio-token-counter",
                padding=False,
            )
        with gr.Column(scale=1, min_width=220):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{kind}_generate", size="lg")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{kind}_interrupt", size="sm", variant="stop")
                skip = gr.Button("Skip", elem_id=f"{kind}_skip", size="sm")
            styles = gr.Dropdown(
                label="Styles",
                choices=backend.style_names(),
                value=[],
                multiselect=True,
                elem_id=f"{kind}_styles",
                allow_custom_value=False,
            )
            reload_styles = gr.Button("Reload styles.csv", elem_id=f"{kind}_reload_styles", size="sm")

    def on_reload_styles(chosen):
        try:
            names = backend.style_names(reload=True)
        except SdStudioError as exc:
            gr.Warning(str(exc))
            return gr.skip()
        return gr.Dropdown(choices=names, value=[n for n in chosen or [] if n in names])

    reload_styles.click(
        on_reload_styles, inputs=styles, outputs=styles, show_progress="hidden", api_visibility="private"
    )
    return PromptRow(prompt, negative_prompt, prompt_tokens, negative_tokens, styles, generate, interrupt, skip)


def _counter_html(text: str) -> str:
    return f'<span class="sdstudio-token-count">{html.escape(text)}</span>'


# A1111's size when the checkpoint does not say its own.
DEFAULT_SIZE = 512
SIZE_FIELDS = ("width", "height")  # follow the checkpoint's native size when it changes


def build_sampling_fields(
    kind: str, samplers: list[str], schedules: list[str], size: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sampler, steps, size (the checkpoint's native `size`), batch, CFG and seed controls; (fields, seed buttons)."""
    size = size or DEFAULT_SIZE
    fields: dict[str, Any] = {}
    with gr.Row():
        fields["sampler_name"] = gr.Dropdown(
            label="Sampling method", choices=samplers, value=DEFAULT_SAMPLER, elem_id=f"{kind}_sampling"
        )
        fields["scheduler"] = gr.Dropdown(
            label="Schedule type", choices=schedules, value="Automatic", elem_id=f"{kind}_scheduler"
        )
    fields["steps"] = gr.Slider(
        1, 150, value=DEFAULT_STEPS, step=1, precision=0, label="Sampling steps", elem_id=f"{kind}_steps"
    )
    with gr.Row():
        fields["width"] = gr.Slider(64, 2048, value=size, step=8, precision=0, label="Width", elem_id=f"{kind}_width")
        fields["height"] = gr.Slider(
            64, 2048, value=size, step=8, precision=0, label="Height", elem_id=f"{kind}_height"
        )
    with gr.Row():
        fields["n_iter"] = gr.Slider(
            1, 100, value=1, step=1, precision=0, label="Batch count", elem_id=f"{kind}_batch_count"
        )
        fields["batch_size"] = gr.Slider(
            1, 8, value=1, step=1, precision=0, label="Batch size", elem_id=f"{kind}_batch_size"
        )
    fields["cfg_scale"] = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{kind}_cfg_scale")
    buttons: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        fields["seed"] = gr.Number(label="Seed", value=-1, precision=0, elem_id=f"{kind}_seed", scale=4, min_width=120)
        buttons["random_seed"] = gr.Button(
            "Random", elem_id=f"{kind}_random_seed", size="sm", scale=1, min_width=70, elem_classes="sdstudio-tool"
        )
        buttons["reuse_seed"] = gr.Button(
            "Reuse", elem_id=f"{kind}_reuse_seed", size="sm", scale=1, min_width=70, elem_classes="sdstudio-tool"
        )
    with gr.Accordion("Variation seed", open=False, elem_id=f"{kind}_subseed_accordion"):
        with gr.Row(equal_height=True):
            fields["subseed"] = gr.Number(
                label="Variation seed", value=-1, precision=0, elem_id=f"{kind}_subseed", scale=4
            )
            buttons["random_subseed"] = gr.Button(
                "Random",
                elem_id=f"{kind}_random_subseed",
                size="sm",
                scale=1,
                min_width=70,
                elem_classes="sdstudio-tool",
            )
            buttons["reuse_subseed"] = gr.Button(
                "Reuse", elem_id=f"{kind}_reuse_subseed", size="sm", scale=1, min_width=70, elem_classes="sdstudio-tool"
            )
        fields["subseed_strength"] = gr.Slider(
            0.0, 1.0, value=0.0, step=0.01, label="Variation strength", elem_id=f"{kind}_subseed_strength"
        )
        with gr.Row():
            fields["seed_resize_from_w"] = gr.Slider(
                0,
                2048,
                value=0,
                step=8,
                precision=0,
                label="Resize seed from width",
                elem_id=f"{kind}_seed_resize_from_w",
            )
            fields["seed_resize_from_h"] = gr.Slider(
                0,
                2048,
                value=0,
                step=8,
                precision=0,
                label="Resize seed from height",
                elem_id=f"{kind}_seed_resize_from_h",
            )
    return fields, buttons


def build_scripts(kind: str, backend: UiBackend) -> ScriptPanel:
    """The tab's always-on script accordions and Script dropdown (at the foot of its settings, as in A1111)."""
    return build_script_panel(
        kind, backend.selectable_scripts(kind), backend.alwayson_scripts(kind), backend.check_image
    )


NO_REFINER = "None"  # A1111's refiner dropdown value for "no refiner"


def build_refiner_fields(kind: str, checkpoints: list[str]) -> dict[str, Any]:
    """A1111's "Refiner" panel: another checkpoint takes over part-way through sampling."""
    fields: dict[str, Any] = {}
    with gr.Accordion("Refiner", open=False, elem_id=f"{kind}_refiner"):
        with gr.Row():
            fields["refiner_checkpoint"] = gr.Dropdown(
                label="Checkpoint",
                choices=[NO_REFINER, *checkpoints],
                value=NO_REFINER,
                allow_custom_value=True,  # a pasted infotext names it "name [hash]"
                elem_id=f"{kind}_refiner_checkpoint",
            )
            fields["refiner_switch_at"] = gr.Slider(
                0.01, 1.0, value=0.8, step=0.01, label="Switch at", elem_id=f"{kind}_refiner_switch_at"
            )
    return fields


def build_hires_fields(
    kind: str, samplers: list[str], schedules: list[str], upscalers: list[str], checkpoints: list[str]
) -> dict[str, Any]:
    """A1111's "Hires. fix" panel (txt2img), closed by default."""
    fields: dict[str, Any] = {}
    with gr.Accordion("Hires. fix", open=False, elem_id=f"{kind}_hires_fix"):
        fields["enable_hr"] = gr.Checkbox(label="Enable hires. fix", value=False, elem_id=f"{kind}_enable_hr")
        with gr.Row():
            fields["hr_upscaler"] = gr.Dropdown(
                label="Upscaler", choices=upscalers, value="Latent", elem_id=f"{kind}_hr_upscaler"
            )
            fields["hr_second_pass_steps"] = gr.Slider(
                0, 150, value=0, step=1, precision=0, label="Hires steps", elem_id=f"{kind}_hires_steps"
            )
            fields["denoising_strength"] = gr.Slider(
                0.0, 1.0, value=0.7, step=0.01, label="Denoising strength", elem_id=f"{kind}_denoising_strength"
            )
        with gr.Row():
            fields["hr_scale"] = gr.Slider(
                1.0, 4.0, value=2.0, step=0.05, label="Upscale by", elem_id=f"{kind}_hr_scale"
            )
            fields["hr_resize_x"] = gr.Slider(
                0, 2048, value=0, step=8, precision=0, label="Resize width to", elem_id=f"{kind}_hr_resize_x"
            )
            fields["hr_resize_y"] = gr.Slider(
                0, 2048, value=0, step=8, precision=0, label="Resize height to", elem_id=f"{kind}_hr_resize_y"
            )
        with gr.Row():
            fields["hr_checkpoint_name"] = gr.Dropdown(
                label="Hires checkpoint",
                choices=[SAME_CHECKPOINT, *checkpoints],
                value=SAME_CHECKPOINT,
                allow_custom_value=True,
                elem_id=f"{kind}_hr_checkpoint",
            )
            fields["hr_sampler_name"] = gr.Dropdown(
                label="Hires sampling method",
                choices=[SAME_SAMPLER, *samplers],
                value=SAME_SAMPLER,
                elem_id=f"{kind}_hr_sampler",
            )
            fields["hr_scheduler"] = gr.Dropdown(
                label="Hires schedule type",
                choices=[SAME_SCHEDULER, *schedules],
                value=SAME_SCHEDULER,
                elem_id=f"{kind}_hr_scheduler",
            )
        fields["hr_prompt"] = gr.Textbox(
            label="Hires prompt", lines=2, placeholder="Leave empty to use the same prompt", elem_id=f"{kind}_hr_prompt"
        )
        fields["hr_negative_prompt"] = gr.Textbox(
            label="Hires negative prompt",
            lines=2,
            placeholder="Leave empty to use the same negative prompt",
            elem_id=f"{kind}_hr_negative_prompt",
        )
    return fields


def build_output_panel(kind: str) -> OutputPanel:
    """Progress bar above the gallery, send-to buttons and infotext below it."""
    progress = gr.HTML("", elem_id=f"{kind}_progress", elem_classes="sdstudio-progress-area", padding=False)
    gallery = gr.Gallery(
        label="Output",
        show_label=False,
        elem_id=f"{kind}_gallery",
        columns=2,
        height=420,
        format="png",
        object_fit="contain",
        type="filepath",
        interactive=False,
        buttons=["download", "fullscreen"],
    )
    with gr.Row():
        send_img2img = gr.Button("Send to img2img", elem_id=f"{kind}_send_to_img2img", size="sm")
        send_inpaint = gr.Button("Send to inpaint", elem_id=f"{kind}_send_to_inpaint", size="sm")
        send_extras = gr.Button("Send to extras", elem_id=f"{kind}_send_to_extras", size="sm")
    infotext = gr.HTML("", elem_id=f"{kind}_infotext", elem_classes="sdstudio-infotext-area")
    info = gr.State({})
    selected = gr.State(0)
    return OutputPanel(progress, gallery, infotext, info, selected, send_img2img, send_inpaint, send_extras)


# -- request building ----------------------------------------------------------------------


def clean_field_values(values: dict[str, Any]) -> dict[str, Any]:
    """UI values as request fields: ints where A1111 has ints, "Use same ..." as None, no blanks."""
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in INT_FIELDS:
            value = int(round(float(value)))
        if name == "hr_sampler_name" and value == SAME_SAMPLER:
            continue
        if name == "hr_scheduler" and value == SAME_SCHEDULER:
            continue
        fields[name] = value
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        if fields.get(name) == 0:
            fields[name] = -1  # 0 in the slider = off, which A1111's request spells -1
    return fields


def saving_fields(backend: UiBackend) -> dict[str, Any]:
    """Whether to save samples and grids, from the Settings (A1111 samples_save / grid_save)."""
    return {
        "do_not_save_samples": not backend.settings.samples_save,
        "do_not_save_grid": not backend.settings.grid_save,
    }


def result_state(result) -> dict[str, Any]:
    """What the tab remembers about the last result (for infotext on select and seed reuse)."""
    return {
        "infotexts": list(result.infotexts),
        "index_of_first_image": int(result.index_of_first_image),
        "seeds": list(result.seeds),
        "subseeds": list(result.subseeds),
        "interrupted": bool(result.interrupted),
        "count": len(result.images),
    }


def infotext_for_index(info: dict[str, Any], index: int | None) -> str:
    """The infotext of gallery image `index` (the grid shows the first image's, as A1111)."""
    texts = info.get("infotexts") or []
    if not texts:
        return ""
    offset = (index or 0) - int(info.get("index_of_first_image") or 0)
    return texts[offset] if 0 <= offset < len(texts) else texts[0]


def seed_for_index(info: dict[str, Any], index: int | None, key: str = "seeds") -> int | None:
    """The seed of gallery image `index` (first image's for the grid)."""
    seeds = info.get(key) or []
    if not seeds:
        return None
    offset = (index or 0) - int(info.get("index_of_first_image") or 0)
    return int(seeds[offset] if 0 <= offset < len(seeds) else seeds[0])


def explain_error(exc: Exception, backend: UiBackend) -> str:
    """The error for the page; a missing checkpoint says where to put one (not the CLI's --ckpt)."""
    from sdstudio.errors import NotFound

    if isinstance(exc, NotFound) and not backend.checkpoint_titles():
        folder = backend.paths.folder("checkpoint")
        return f"No checkpoint found: put a .safetensors or .ckpt model in {folder} and press Refresh"
    return str(exc)


def task_request(request: Any) -> dict[str, Any]:
    """What the task store keeps of a page's request: its fields that are plain JSON values (images left out)."""
    if isinstance(request, BaseModel):
        values = request.model_dump()
    elif dataclasses.is_dataclass(request) and not isinstance(request, type):
        values = {item.name: getattr(request, item.name) for item in dataclasses.fields(request)}
    else:
        values = {}
    return {name: value for name, value in values.items() if _is_json_value(value)}


def _is_json_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _done_message(result) -> str:
    made = len(result.images) - int(result.index_of_first_image)
    grid = " and a grid" if result.index_of_first_image and result.images else ""  # X/Y/Z may return only its grid
    if result.interrupted:
        return f"Interrupted: {made} image(s){grid} kept"
    return f"Done: {made} image(s){grid}"


def wire_generation(
    tab: GenerationTab,
    backend: UiBackend,
    queue,
    checkpoint: gr.Dropdown,
    extra_inputs: list[Any],
    make_request: Callable[[dict[str, Any], list[Any]], Any],
    run_request: Callable[[Any, Any, ScriptSelection | None], Any] | None = None,
) -> None:
    """Connect Generate, Interrupt, Skip, seed buttons, token counters and gallery selection.

    `run_request(request, control, scripts)` runs what `make_request` built with the scripts the
    tab's script panel chose (default: the engine's txt2img/img2img).
    """
    names = tab.field_names()
    row, out = tab.row, tab.output
    kind = tab.kind
    gen_outputs = [out.gallery, out.progress, out.infotext, out.info, out.selected]
    skip = gr.skip
    script_inputs = tab.scripts.inputs() if tab.scripts is not None else []

    def generate(page: gr.Request, checkpoint_title, prompt, negative_prompt, styles, *rest):
        values = dict(zip(names, rest[: len(names)]))
        values.update(prompt=prompt or "", negative_prompt=negative_prompt or "", styles=list(styles or []))
        extra = list(rest[len(names) : len(rest) - len(script_inputs)])
        script_values = list(rest[len(rest) - len(script_inputs) :])
        if backend.engine is None:
            yield skip(), "", status_html("Generation is not available: no engine was built", "error"), skip(), skip()
            return
        run = run_request or (backend.engine.txt2img if kind == "txt2img" else backend.engine.img2img)
        try:
            request = make_request(values, extra)
            scripts = tab.scripts.selection(script_values) if tab.scripts is not None else None
            backend.check_scripts(kind, scripts)  # an unknown script or a bad argument is refused before queueing
            if checkpoint_title:
                # Pinned to the job: a later dropdown change (or another user's) does not move it. The
                # dropdown's own event loads and saves the choice; a page does not save it again here.
                request.override_settings = {**request.override_settings, "sd_model_checkpoint": checkpoint_title}
            # Counted as this page's client against the queue limits, as the API's jobs are.
            submitter = client_queue(queue, page, backend.settings)

            def work(control, request=request, scripts=scripts):
                return run(request, control, scripts)

            if backend.tasks is not None:  # stored as a task: the Queue tab lists it with its images
                job = backend.tasks.submit_ui(kind, task_request(request), work, submitter)
            else:
                job = submit_generation(submitter, kind, work)
        except SdStudioError as exc:  # a bad value, or the queue full (QueueFull names its setting)
            yield skip(), "", status_html(str(exc), "error"), skip(), skip()
            return
        yield skip(), "", status_html("Queued…"), skip(), skip()
        for number, snap in enumerate(follow_job(queue, job)):
            gallery_update = [snap.preview] if snap.preview is not None else skip()
            yield gallery_update, snap.html(), "" if number == 0 else skip(), skip(), skip()
        try:
            result = job.future.result()
        except SdStudioError as exc:
            yield [], "", status_html(explain_error(exc, backend), "error"), {}, 0
            return
        except Exception as exc:  # a bug: keep the UI alive and say what happened
            log.exception("%s job failed", kind)
            yield [], "", status_html(f"Generation failed: {type(exc).__name__}: {exc}", "error"), {}, 0
            return
        state = result_state(result)
        first = int(result.index_of_first_image) if len(result.images) > result.index_of_first_image else 0
        message = _done_message(result)
        warnings = "".join(status_html(w, "warning") for w in getattr(result, "warnings", []) or [])
        text = (
            infotext_html(infotext_for_index(state, first))
            + warnings
            + status_html(message, "interrupted" if result.interrupted else "done")
        )
        yield list(result.images), "", text, state, first

    inputs = [checkpoint, row.prompt, row.negative_prompt, row.styles, *tab.field_components(), *extra_inputs]
    inputs += script_inputs
    row.generate.click(
        generate,
        inputs=inputs,
        outputs=gen_outputs,
        concurrency_limit=None,
        show_progress="hidden",
        api_name=f"{kind}_generate",
        api_visibility="private",
    )

    row.interrupt.click(
        lambda: queue.interrupt() and None,
        inputs=None,
        outputs=None,
        concurrency_limit=None,
        show_progress="hidden",
        api_visibility="private",
    )
    row.skip.click(
        lambda: queue.skip() and None,
        inputs=None,
        outputs=None,
        concurrency_limit=None,
        show_progress="hidden",
        api_visibility="private",
    )

    def count(text, steps):
        try:
            return _counter_html(backend.count_tokens(text or "", int(steps or 20)).text)
        except Exception:  # the counter is a hint; a tokenizer problem must not interrupt typing
            log.exception("token counter failed")
            return _counter_html("?/75")

    steps = tab.fields["steps"]
    for box, counter in ((row.prompt, row.prompt_tokens), (row.negative_prompt, row.negative_tokens)):
        box.change(
            count,
            inputs=[box, steps],
            outputs=counter,
            trigger_mode="always_last",
            show_progress="hidden",
            concurrency_limit=None,
            api_visibility="private",
        )

    def on_select(info, evt: gr.SelectData):
        return infotext_html(infotext_for_index(info or {}, evt.index)), evt.index

    out.gallery.select(
        on_select,
        inputs=[out.info],
        outputs=[out.infotext, out.selected],
        show_progress="hidden",
        api_visibility="private",
    )


def wire_seed_buttons(tab: GenerationTab, buttons: dict[str, Any]) -> None:
    """Random sets -1; Reuse takes the seed (or variation seed) of the selected image."""
    out = tab.output
    buttons["random_seed"].click(
        lambda: -1, outputs=tab.fields["seed"], show_progress="hidden", api_visibility="private"
    )
    buttons["random_subseed"].click(
        lambda: -1, outputs=tab.fields["subseed"], show_progress="hidden", api_visibility="private"
    )

    def reuse(info, index, key):
        seed = seed_for_index(info or {}, index, key)
        return gr.skip() if seed is None else seed

    buttons["reuse_seed"].click(
        lambda info, index: reuse(info, index, "seeds"),
        inputs=[out.info, out.selected],
        outputs=tab.fields["seed"],
        show_progress="hidden",
        api_visibility="private",
    )
    buttons["reuse_subseed"].click(
        lambda info, index: reuse(info, index, "subseeds"),
        inputs=[out.info, out.selected],
        outputs=tab.fields["subseed"],
        show_progress="hidden",
        api_visibility="private",
    )
