"""The txt2img tab: prompt row on top, settings left, output right (A1111's layout)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdstudio.ui.backend import UiBackend
from sdstudio.ui.generation import (
    GenerationTab,
    build_hires_fields,
    build_output_panel,
    build_prompt_row,
    build_refiner_fields,
    build_sampling_fields,
    build_scripts,
    clean_field_values,
    saving_fields,
    wire_generation,
    wire_seed_buttons,
)

KIND = "txt2img"


def make_txt2img_request(backend: UiBackend, values: dict[str, Any]):
    """A Txt2ImgRequest from the tab's field values (InvalidRequest names a bad field)."""
    from sdstudio.engine.request import Txt2ImgRequest, check_limits

    fields = clean_field_values(values)
    if not fields.get("enable_hr"):
        for name in [n for n in fields if n.startswith("hr_")] + ["denoising_strength"]:
            fields.pop(name, None)
    request = Txt2ImgRequest(**fields, **saving_fields(backend))
    check_limits(request, backend.settings)  # the API's limits hold for the web UI too
    return request


def build_txt2img_tab(
    backend: UiBackend,
    queue,
    checkpoint: gr.Dropdown,
    samplers: list[str],
    schedules: list[str],
    hires_upscalers: list[str],
) -> GenerationTab:
    """Build the tab's components (inside an open gr.Tab) and wire its events."""
    row = build_prompt_row(KIND, backend)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=380, elem_id=f"{KIND}_settings"):
            fields, seed_buttons = build_sampling_fields(KIND, samplers, schedules, backend.native_size())
            titles = backend.checkpoint_titles()
            fields.update(build_hires_fields(KIND, samplers, schedules, hires_upscalers, titles))
            fields.update(build_refiner_fields(KIND, titles))
            scripts = build_scripts(KIND, backend)
        with gr.Column(scale=1, min_width=380, elem_id=f"{KIND}_results"):
            output = build_output_panel(KIND)
    tab = GenerationTab(KIND, row, fields, output, scripts=scripts)
    wire_generation(tab, backend, queue, checkpoint, [], lambda values, _extra: make_txt2img_request(backend, values))
    wire_seed_buttons(tab, seed_buttons)
    return tab
