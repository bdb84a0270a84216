"""The Settings tab: every option under its section and A1111 label (extensions' in their own), saved by Apply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import gradio as gr

from sdstudio.config import OPTION_INFO, OptionInfo, Settings, option_info
from sdstudio.engine.job_queue import JobQueue
from sdstudio.errors import SdStudioError
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.jobs import client_queue, status_html

if TYPE_CHECKING:
    from sdstudio.extensions.scripts.host import ExtensionOption

OPEN_SECTION = "Stable Diffusion"  # shown unfolded, as the page most visits are for


def settings_layout(
    settings: Settings, extension_options: Sequence[ExtensionOption] = ()
) -> list[tuple[str, list[str]]]:
    """The sections (config.OPTION_INFO's order) with the options the Settings object has; others under "Other".

    Options that extensions declare (`extension_options`) follow in their own sections, in declaration order.
    """
    fields = type(settings).model_fields
    extra = settings.model_extra or {}
    declared = {option.key for option in extension_options}
    names = [n for n in OPTION_INFO if n in fields] + [n for n in fields if n not in OPTION_INFO]
    names += sorted(n for n, v in extra.items() if n not in declared and isinstance(v, (bool, int, float, str)))
    sections: dict[str, list[str]] = {}
    for name in names:
        sections.setdefault(option_info(name).section, []).append(name)
    order = {section: i for i, section in enumerate(dict.fromkeys(info.section for info in OPTION_INFO.values()))}
    layout = sorted(sections.items(), key=lambda item: order.get(item[0], len(order)))
    for option in extension_options:
        section = next((names for title, names in layout if title == option.section), None)
        if section is None:
            section = []
            layout.append((option.section, section))
        section.append(option.key)
    return layout


def extension_option_info(option: ExtensionOption) -> OptionInfo:
    """How the Settings tab shows an extension's option: its section, label and choices."""
    return OptionInfo(option.section, option.label, tuple(str(choice) for choice in option.choices))


def component_for(name: str, value: Any, info: OptionInfo | None = None):
    """A checkbox, number, dropdown or textbox for one option, labelled as A1111 labels it (or as `info` says)."""
    elem_id = f"setting_{name}"
    info = info or option_info(name)
    label = info.label
    if isinstance(value, list):  # e.g. disabled_extensions: a list stays a list when the page sends it back
        choices = list(dict.fromkeys([*info.choices, *(str(v) for v in value)]))
        return gr.Dropdown(
            choices, value=value, multiselect=True, label=label, elem_id=elem_id, allow_custom_value=True
        )
    if isinstance(value, bool):
        return gr.Checkbox(label=label, value=value, elem_id=elem_id)
    if isinstance(value, int):
        return gr.Number(label=label, value=value, precision=0, elem_id=elem_id)
    if isinstance(value, float):
        return gr.Number(label=label, value=value, elem_id=elem_id)
    if info.choices:
        return gr.Dropdown(list(info.choices), value=value, label=label, elem_id=elem_id, allow_custom_value=True)
    return gr.Textbox(label=label, value="" if value is None else str(value), elem_id=elem_id, lines=1)


def coerce(name: str, value: Any, current: Any) -> Any:
    """The UI value in the option's own type (Number gives floats, Textbox gives strings)."""
    if isinstance(current, list):
        return list(value or [])
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, int) and value is not None:
        return int(round(float(value)))
    if isinstance(current, float) and value is not None:
        return float(value)
    return value


def build_settings_tab(backend: UiBackend, queue: JobQueue | None = None) -> None:
    """Build the tab (inside an open gr.Tab) and wire Apply / Reload; a new checkpoint is loaded on `queue`."""
    extension_options = backend.extension_options()
    infos = {option.key: extension_option_info(option) for option in extension_options}
    # The localizations found now (A1111 lists them when it builds its page); the page applies the choice when reloaded.
    infos["localization"] = replace(option_info("localization"), choices=tuple(backend.localization_names()))
    components: dict[str, Any] = {}
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=1, size="md")
        reload = gr.Button("Show the values in use", elem_id="settings_reload", scale=1, size="md")
    result = gr.HTML("", elem_id="settings_result")
    for title, names in settings_layout(backend.settings, extension_options):
        with gr.Accordion(title, open=title == OPEN_SECTION, elem_id=f"settings_section_{_slug(title)}"):
            with gr.Row(equal_height=False):
                for name in names:
                    components[name] = component_for(name, backend.option_value(name), infos.get(name))
    names = list(components)
    # What this page showed, so Apply sends only what the user changed here and never
    # reverts an option changed meanwhile elsewhere (checkpoint dropdown, API, another tab).
    shown = gr.State({n: backend.option_value(n) for n in names})

    def on_apply(page: gr.Request, previous, *values):
        current = backend.settings
        typed = {n: coerce(n, v, backend.option_value(n)) for n, v in zip(names, values)}
        changes = {n: v for n, v in typed.items() if v != (previous or {}).get(n)}
        try:
            changed = backend.apply_settings(changes, client_queue(queue, page, current) if queue is not None else None)
        except SdStudioError as exc:
            return status_html(str(exc), "error"), gr.skip()
        now = {n: backend.option_value(n) for n in names}
        if not changed:
            return status_html("No settings changed"), now
        return status_html(
            f"{len(changed)} setting(s) changed and saved to config.json: {', '.join(changed)}", "done"
        ), now

    def on_reload():
        now = {n: backend.option_value(n) for n in names}
        return [now, *now.values()]

    apply.click(on_apply, inputs=[shown, *components.values()], outputs=[result, shown], api_visibility="private")
    reload.click(on_reload, outputs=[shown, *components.values()], api_visibility="private")


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in title.lower())


def wire_checkpoint_choice(
    backend: UiBackend, queue: JobQueue, checkpoint: gr.Dropdown, size_fields: list[Any]
) -> None:
    """The checkpoint dropdown: a choice is loaded, then saved; width and height follow the model's native size.

    A checkpoint that does not load is a warning naming sd_model_checkpoint, and the dropdown
    goes back to the one still selected (as the API's POST /options keeps it).
    """

    def on_checkpoint(page: gr.Request, title):
        try:
            backend.select_checkpoint(title, client_queue(queue, page, backend.settings))
        except SdStudioError as exc:
            gr.Warning(str(exc), title="Checkpoint not changed")
            return [gr.update(value=backend.current_checkpoint()), *(gr.skip() for _ in size_fields)]
        size = backend.native_size(title)  # width and height follow the model (SD 512, SDXL 1024...)
        return [gr.skip(), *(gr.skip() if size is None else size for _ in size_fields)]

    checkpoint.change(
        on_checkpoint,
        inputs=checkpoint,
        outputs=[checkpoint, *size_fields],
        show_progress="hidden",
        api_visibility="private",
    )
