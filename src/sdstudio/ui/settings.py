"""The Settings tab: every option under its A1111 name, saved to config.json by Apply."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdstudio.config import PATH_OPTIONS, Settings
from sdstudio.errors import SdStudioError
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.jobs import status_html

# Sections as A1111's settings pages group them; a row is (title, option names). Options not
# listed here (new ones, extensions' keys kept in config.json) land in "Other".
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Stable Diffusion", ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")),
    (
        "Saving images",
        (
            "samples_save",
            "samples_format",
            "grid_save",
            "grid_format",
            "return_grid",
            "save_images_add_number",
            "save_to_dirs",
            "directories_filename_pattern",
            "samples_filename_pattern",
            "enable_pnginfo",
            "jpeg_quality",
            "webp_lossless",
        ),
    ),
    (
        "Paths for saving",
        PATH_OPTIONS,
    ),
    (
        "Sampler parameters",
        ("eta_noise_seed_delta", "eta_ancestral", "eta_ddim", "s_churn", "s_tmin", "s_tmax", "s_noise", "randn_source"),
    ),
    ("Live previews", ("show_progress_every_n_steps", "live_previews_enable")),
    (
        "Postprocessing",
        (
            "face_restoration_model",
            "code_former_weight",
            "ESRGAN_tile",
            "ESRGAN_tile_overlap",
            "enable_invisible_watermark",
        ),
    ),
    ("Device and precision", ("device", "precision", "no_half_vae", "vae_tiling", "attention_slicing", "cpu_offload")),
)


# Options with a known set of values get a dropdown (custom values still allowed, as
# config.json may hold anything an older or newer version wrote).
CHOICES: dict[str, tuple[str, ...]] = {
    "samples_format": ("png", "jpg", "webp"),
    "grid_format": ("png", "jpg", "webp"),
    "randn_source": ("CPU", "GPU", "NV"),
    "face_restoration_model": ("CodeFormer", "GFPGAN"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "precision": ("auto", "fp32", "fp16", "bf16"),
}


def settings_layout(settings: Settings) -> list[tuple[str, list[str]]]:
    """The sections with the options the Settings object has, unknown ones under "Other"."""
    known = set(type(settings).model_fields) | set(settings.model_extra or {})
    placed: set[str] = set()
    layout = []
    for title, names in SECTIONS:
        present = [n for n in names if n in known]
        placed.update(present)
        if present:
            layout.append((title, present))
    other = sorted(n for n in known - placed if isinstance(getattr(settings, n, None), (bool, int, float, str)))
    if other:
        layout.append(("Other", other))
    return layout


def component_for(name: str, value: Any):
    """A checkbox, number or textbox for one option, labelled with its A1111 name."""
    elem_id = f"setting_{name}"
    if isinstance(value, bool):
        return gr.Checkbox(label=name, value=value, elem_id=elem_id)
    if isinstance(value, int):
        return gr.Number(label=name, value=value, precision=0, elem_id=elem_id)
    if isinstance(value, float):
        return gr.Number(label=name, value=value, elem_id=elem_id)
    if name in CHOICES:
        choices = list(CHOICES[name])
        return gr.Dropdown(choices, value=value, label=name, elem_id=elem_id, allow_custom_value=True)
    return gr.Textbox(label=name, value="" if value is None else str(value), elem_id=elem_id, lines=1)


def coerce(name: str, value: Any, current: Any) -> Any:
    """The UI value in the option's own type (Number gives floats, Textbox gives strings)."""
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, int) and value is not None:
        return int(round(float(value)))
    if isinstance(current, float) and value is not None:
        return float(value)
    return value


def build_settings_tab(backend: UiBackend) -> None:
    """Build the tab (inside an open gr.Tab) and wire Apply / Reload."""
    settings = backend.settings
    components: dict[str, Any] = {}
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=1, size="md")
        reload = gr.Button("Show the values in use", elem_id="settings_reload", scale=1, size="md")
    result = gr.HTML("", elem_id="settings_result")
    for title, names in settings_layout(settings):
        with gr.Accordion(title, open=title == "Stable Diffusion"):
            with gr.Row(equal_height=False):
                for name in names:
                    components[name] = component_for(name, getattr(settings, name))
    names = list(components)
    # What this page showed, so Apply sends only what the user changed here and never
    # reverts an option changed meanwhile elsewhere (checkpoint dropdown, API, another tab).
    shown = gr.State({n: getattr(settings, n) for n in names})

    def on_apply(previous, *values):
        current = backend.settings
        typed = {n: coerce(n, v, getattr(current, n, None)) for n, v in zip(names, values)}
        changes = {n: v for n, v in typed.items() if v != (previous or {}).get(n)}
        try:
            changed = backend.apply_settings(changes)
        except SdStudioError as exc:
            return status_html(str(exc), "error"), gr.skip()
        now = {n: getattr(backend.settings, n) for n in names}
        if not changed:
            return status_html("No settings changed"), now
        return status_html(
            f"{len(changed)} setting(s) changed and saved to config.json: {', '.join(changed)}", "done"
        ), now

    def on_reload():
        now = {n: getattr(backend.settings, n) for n in names}
        return [now, *now.values()]

    apply.click(on_apply, inputs=[shown, *components.values()], outputs=[result, shown], api_visibility="private")
    reload.click(on_reload, outputs=[shown, *components.values()], api_visibility="private")
