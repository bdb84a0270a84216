"""The Checkpoint Merger tab (A1111's layout): three models, method, multiplier, format, config, VAE, metadata."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdstudio.errors import SdStudioError
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.jobs import client_queue, follow_job, status_html

log = logging.getLogger(__name__)

INTERP_METHODS = ("No interpolation", "Weighted sum", "Add difference")
INTERP_DESCRIPTIONS = {
    "No interpolation": "No interpolation will be used. Requires one model; A. Allows for format conversion and "
    "VAE baking.",
    "Weighted sum": "A weighted sum will be used for interpolation. Requires two models; A and B. The result is "
    "calculated as A * (1 - M) + B * M",
    "Add difference": "The difference between the last two models will be added to the first. Requires three "
    "models; A, B and C. The result is calculated as A + (B - C) * M",
}
# The fields in the order the Merge button sends them (A1111's run_modelmerger parameters).
MERGER_FIELDS = (
    "primary_model_name",
    "secondary_model_name",
    "tertiary_model_name",
    "interp_method",
    "multiplier",
    "save_as_half",
    "custom_name",
    "checkpoint_format",
    "config_source",
    "bake_in_vae",
    "discard_weights",
    "save_metadata",
    "add_merge_recipe",
    "copy_metadata_fields",
    "metadata_json",
)


@dataclass
class CheckpointMergerTab:
    """The tab's components by A1111 field name, the Merge button and the result text."""

    fields: dict[str, Any]
    merge: Any
    result: Any


def interp_description(method: str) -> str:
    """The line above the models explaining the chosen method."""
    return f"<p>{INTERP_DESCRIPTIONS.get(method, '')}</p>"


def run_merge(backend: UiBackend, queue, page: Any, values: dict[str, Any]) -> Iterator[str]:
    """Queue the merge and yield the result area's HTML: progress while it runs, then the saved path or the error."""
    fields = {name: values.get(name) for name in MERGER_FIELDS if values.get(name) is not None}
    try:
        job = backend.submit_merge(fields, client_queue(queue, page, backend.settings))
    except SdStudioError as exc:
        yield status_html(str(exc), "error")
        return
    for snap in follow_job(queue, job):
        yield snap.html()
    try:
        result = job.future.result()
    except SdStudioError as exc:
        yield status_html(f"Error merging checkpoints: {exc}", "error")
        return
    except Exception as exc:  # a bug: keep the UI alive and say what happened
        log.exception("checkpoint merge failed")
        yield status_html(f"Error merging checkpoints: {type(exc).__name__}: {exc}", "error")
        return
    yield status_html(f"{result.message} ({result.entry.title})")


def build_checkpoint_merger_tab(backend: UiBackend, queue, checkpoint: Any = None) -> CheckpointMergerTab:
    """Build the tab (inside an open gr.Tab); `checkpoint`, the page's checkpoint list, is refreshed after a merge."""
    titles = backend.checkpoint_titles()
    fields: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(variant="compact"):
            description = gr.HTML(interp_description("Weighted sum"), elem_id="modelmerger_interp_description")
            with gr.Row(elem_id="modelmerger_models"):
                for name, label, elem in (
                    ("primary_model_name", "Primary model (A)", "modelmerger_primary_model_name"),
                    ("secondary_model_name", "Secondary model (B)", "modelmerger_secondary_model_name"),
                    ("tertiary_model_name", "Tertiary model (C)", "modelmerger_tertiary_model_name"),
                ):
                    fields[name] = gr.Dropdown(titles, value=None, label=label, elem_id=elem, allow_custom_value=True)
                refresh = gr.Button("Refresh", elem_id="modelmerger_refresh", size="sm", scale=0, min_width=80)
            fields["custom_name"] = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
            fields["multiplier"] = gr.Slider(
                0.0,
                1.0,
                value=0.3,
                step=0.05,
                label="Multiplier (M) - set to 0 to get model A",
                elem_id="modelmerger_interp_amount",
            )
            fields["interp_method"] = gr.Radio(
                list(INTERP_METHODS),
                value="Weighted sum",
                label="Interpolation Method",
                elem_id="modelmerger_interp_method",
            )
            with gr.Row():
                fields["checkpoint_format"] = gr.Radio(
                    ["ckpt", "safetensors"],
                    value="safetensors",
                    label="Checkpoint format",
                    elem_id="modelmerger_checkpoint_format",
                )
                fields["save_as_half"] = gr.Checkbox(
                    value=False, label="Save as float16", elem_id="modelmerger_save_as_half"
                )
            with gr.Row():
                fields["config_source"] = gr.Radio(
                    ["A, B or C", "B", "C", "Don't"],
                    value="A, B or C",
                    type="index",
                    label="Copy config from",
                    elem_id="modelmerger_config_method",
                )
                fields["bake_in_vae"] = gr.Dropdown(
                    backend.bake_vae_choices(), value="None", label="Bake in VAE", elem_id="modelmerger_bake_in_vae"
                )
            fields["discard_weights"] = gr.Textbox(
                value="", label="Discard weights with matching name", elem_id="modelmerger_discard_weights"
            )
            with gr.Accordion("Metadata", open=False, elem_id="modelmerger_metadata") as metadata_editor:
                with gr.Row():
                    fields["save_metadata"] = gr.Checkbox(
                        value=True, label="Save metadata", elem_id="modelmerger_save_metadata"
                    )
                    fields["add_merge_recipe"] = gr.Checkbox(
                        value=True, label="Add merge recipe metadata", elem_id="modelmerger_add_recipe"
                    )
                    fields["copy_metadata_fields"] = gr.Checkbox(
                        value=True, label="Copy metadata from merged models", elem_id="modelmerger_copy_metadata"
                    )
                fields["metadata_json"] = gr.TextArea(
                    "{}", label="Metadata in JSON format", elem_id="modelmerger_metadata_json"
                )
                read_metadata = gr.Button("Read metadata from selected checkpoints", elem_id="modelmerger_read")
            merge = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column(variant="compact", elem_id="modelmerger_results_container"):
            result = gr.HTML("", elem_id="modelmerger_result")

    model_fields = [fields[name] for name in MERGER_FIELDS[:3]]
    refreshed = [*model_fields, *([checkpoint] if checkpoint is not None else [])]

    def dropdown_updates() -> list[Any]:
        titles = backend.refresh_checkpoints()
        return [gr.Dropdown(choices=titles) for _ in refreshed]

    def on_merge(page: gr.Request, *values: Any) -> Iterator[list[Any]]:
        skipped = [gr.skip() for _ in refreshed]
        text = ""
        for text in run_merge(backend, queue, page, dict(zip(MERGER_FIELDS, values))):
            yield [*skipped, text]
        yield [*dropdown_updates(), text]

    fields["interp_method"].change(
        interp_description,
        inputs=fields["interp_method"],
        outputs=description,
        show_progress="hidden",
        api_visibility="private",
    )
    fields["checkpoint_format"].change(
        lambda fmt: gr.Accordion(visible=fmt == "safetensors"),
        inputs=fields["checkpoint_format"],
        outputs=metadata_editor,
        show_progress="hidden",
        api_visibility="private",
    )
    read_metadata.click(
        backend.read_merge_metadata,
        inputs=model_fields,
        outputs=fields["metadata_json"],
        show_progress="hidden",
        api_visibility="private",
    )
    refresh.click(
        lambda: [*dropdown_updates()[:3], gr.Dropdown(choices=backend.bake_vae_choices())],
        outputs=[*model_fields, fields["bake_in_vae"]],
        show_progress="hidden",
        api_visibility="private",
    )
    merge.click(
        on_merge,
        inputs=[fields[name] for name in MERGER_FIELDS],
        outputs=[*refreshed, result],
        concurrency_limit=None,
        api_visibility="private",
    )
    return CheckpointMergerTab(fields, merge, result)
