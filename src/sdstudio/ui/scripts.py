"""The Script dropdown and the always-on scripts of txt2img and img2img (A1111's script UI).

A script's `ui()` returns control descriptions (sdstudio.extensions.scripts.controls);
`component_for_control` turns each into a Gradio component. The panel lists its components
in one fixed order (the dropdown, each selectable script's controls, each always-on
script's controls), and `script_selection` reads the values back in that order: the chosen
script's arguments in its ui() order, and `{name: {"args": [...]}}` per always-on script,
which is what the engine (and A1111's API) takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from sdstudio.extensions.scripts.controls import Control
from sdstudio.ui.image_inputs import ImageCheck, checked_image

if TYPE_CHECKING:
    from sdstudio.engine.scripting import ScriptSelection

NO_SCRIPT = "None"  # the dropdown's "no script" entry, as in A1111


# -- controls -> components ----------------------------------------------------------------------


def _common(control: Control, elem_id: str) -> dict[str, Any]:
    return {"label": control.label or None, "visible": control.visible, "elem_id": elem_id}


def _info(control: Control) -> dict[str, Any]:
    return {"info": control.info or None}


def shown_value(control: Any, value: Any) -> Any:
    """An argument as its component shows it: an index-typed choice's position as the choice it names."""
    if getattr(control, "type", None) != "index":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return control.choices[value] if 0 <= value < len(control.choices) else None
    if isinstance(value, list):
        return [control.choices[v] if isinstance(v, int) and 0 <= v < len(control.choices) else v for v in value]
    return value


def _choice_value(control: Any) -> Any:
    """The shown default of a choice control (an index-typed one may give it as the position)."""
    return shown_value(control, control.value)


def _finite(number: float) -> float | None:
    return number if number not in (float("inf"), float("-inf")) else None


def _slider(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    return gr.Slider(
        minimum=control.minimum,
        maximum=control.maximum,
        step=control.step,
        value=control.value,
        **_common(control, elem_id),
        **_info(control),
    )


def _number(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    whole = float(control.step).is_integer() and float(control.value).is_integer()
    return gr.Number(
        value=control.value,
        minimum=_finite(control.minimum),
        maximum=_finite(control.maximum),
        step=control.step,
        precision=0 if whole else None,
        **_common(control, elem_id),
        **_info(control),
    )


def _checkbox(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    return gr.Checkbox(value=bool(control.value), **_common(control, elem_id), **_info(control))


def _textbox(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    return gr.Textbox(
        value=control.value,
        lines=control.lines,
        placeholder=control.placeholder or None,
        **_common(control, elem_id),
        **_info(control),
    )


def _dropdown(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    return gr.Dropdown(
        choices=list(control.choices),
        value=_choice_value(control),
        type=control.type,
        multiselect=control.multiselect,
        **_common(control, elem_id),
        **_info(control),
    )


def _radio(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    return gr.Radio(
        choices=list(control.choices),
        value=_choice_value(control),
        type=control.type,
        **_common(control, elem_id),
        **_info(control),
    )


def _checkbox_group(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    return gr.CheckboxGroup(
        choices=list(control.choices),
        value=_choice_value(control) or [],
        type=control.type,
        **_common(control, elem_id),
        **_info(control),
    )


def _file(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    return gr.File(type="filepath", file_count="single", **_common(control, elem_id))


def _image(control: Any, elem_id: str, check: ImageCheck | None) -> Any:
    if check is None:
        return gr.Image(type="pil", **_common(control, elem_id))
    # Checked against img_max_decode_mp before Gradio decodes it, as every image box of the page.
    return checked_image(check, "script_args", type="pil", **_common(control, elem_id))


ComponentBuilder = Callable[[Any, str, ImageCheck | None], Any]

COMPONENT_BUILDERS: dict[str, ComponentBuilder] = {
    "slider": _slider,
    "number": _number,
    "checkbox": _checkbox,
    "textbox": _textbox,
    "dropdown": _dropdown,
    "radio": _radio,
    "checkbox_group": _checkbox_group,
    "file": _file,
    "image": _image,
}
"""Control kind (Control.kind) -> the Gradio component that shows it."""


def component_for_control(control: Control, elem_id: str, check: ImageCheck | None = None) -> Any:
    """The Gradio component for one script control (a control of no known kind keeps its value unseen)."""
    build = COMPONENT_BUILDERS.get(control.kind)
    if build is None:
        return gr.State(control.value)  # still one argument in its place
    return build(control, elem_id, check)


def argument_from_ui(control: Control, value: Any) -> Any:
    """A component's value as the script gets it: an uploaded file as its text (as over the API)."""
    if control.kind == "file" and value:
        path = value if isinstance(value, (str, Path)) else getattr(value, "path", None) or getattr(value, "name", "")
        return Path(str(path)).read_text(encoding="utf-8", errors="replace")
    return value


# -- the panel ---------------------------------------------------------------------------------


@dataclass
class ScriptControls:
    """One script's controls on a tab and the components built for them, in its ui() order."""

    title: str
    controls: list[Control]
    infotext_fields: list[tuple[int, str]] = field(default_factory=list)  # (argument index, infotext key)
    components: list[Any] = field(default_factory=list)
    container: Any = None  # the gr.Column (selectable) or gr.Accordion (always-on) holding them

    @property
    def name(self) -> str:
        """What requests call it (A1111: the title, lowercased)."""
        return self.title.lower()


def script_selection(
    chosen: str | None,
    selectable: Sequence[ScriptControls],
    alwayson: Sequence[ScriptControls],
    values: Sequence[Any],
) -> ScriptSelection:
    """The scripts a Generate asks for, from the panel's component values in panel order.

    `values` holds each selectable script's control values, then each always-on script's,
    each script's in its ui() order. A chosen script the page has no controls for (loaded
    after the page was built) gets no arguments: the engine gives it its defaults.
    """
    from sdstudio.engine.scripting import ScriptSelection

    expected = sum(len(script.controls) for script in [*selectable, *alwayson])
    if len(values) != expected:
        raise ValueError(f"the script panel has {expected} controls but {len(values)} values came")
    args: list[list[Any]] = []
    position = 0
    for script in [*selectable, *alwayson]:
        count = len(script.controls)
        args.append([argument_from_ui(c, v) for c, v in zip(script.controls, values[position : position + count])])
        position += count
    script_name = None if not chosen or chosen == NO_SCRIPT else chosen
    script_args: list[Any] = []
    for script, script_values in zip(selectable, args):
        if script_name is not None and script.name == script_name.lower():
            script_args = script_values
    first_alwayson = len(selectable)
    alwayson_scripts = {script.name: {"args": args[first_alwayson + i]} for i, script in enumerate(alwayson)}
    return ScriptSelection(script_name, script_args, alwayson_scripts)


@dataclass
class ScriptPanel:
    """A tab's Script dropdown, the selectable scripts' controls and the always-on scripts' accordions."""

    kind: str
    dropdown: Any
    selectable: list[ScriptControls]
    alwayson: list[ScriptControls]

    def inputs(self) -> list[Any]:
        """The components whose values `selection` reads, in its order."""
        scripts = [*self.selectable, *self.alwayson]
        return [self.dropdown, *(component for script in scripts for component in script.components)]

    def selection(self, values: Sequence[Any]) -> ScriptSelection:
        """The ScriptSelection for the values of `inputs()`."""
        return script_selection(values[0] if values else None, self.selectable, self.alwayson, list(values[1:]))


def _slug(text: str) -> str:
    return re.sub(r"\W+", "_", text.lower()).strip("_")


def _build_controls(kind: str, script: ScriptControls, check: ImageCheck | None) -> None:
    base = f"{kind}_script_{_slug(script.title)}"
    script.components = [component_for_control(c, f"{base}_{i}", check) for i, c in enumerate(script.controls)]


def _infotext_fields(entry: Any) -> list[tuple[int, str]]:
    """The (argument index, infotext key) pairs a pasted infotext fills, of a host entry's script."""
    return list(getattr(getattr(entry, "script", None), "infotext_fields", None) or [])


def build_script_panel(
    kind: str, selectable: Sequence[Any], alwayson: Sequence[Any], check: ImageCheck | None = None
) -> ScriptPanel:
    """Always-on scripts as accordions, then the Script dropdown showing only the chosen script's controls.

    `selectable` and `alwayson` are the host's LoadedScript entries (title, controls).
    """
    always = [ScriptControls(entry.title, list(entry.controls), _infotext_fields(entry)) for entry in alwayson]
    for script in always:
        with gr.Accordion(script.title, open=False, elem_id=f"{kind}_script_{_slug(script.title)}") as accordion:
            _build_controls(kind, script, check)
        script.container = accordion
    scripts = [ScriptControls(entry.title, list(entry.controls)) for entry in selectable]
    dropdown = gr.Dropdown(
        [NO_SCRIPT, *(script.title for script in scripts)],
        value=NO_SCRIPT,
        label="Script",
        elem_id=f"{kind}_script_list",
    )
    for script in scripts:
        with gr.Column(visible=False, elem_id=f"{kind}_script_{_slug(script.title)}") as column:
            _build_controls(kind, script, check)
        script.container = column
    panel = ScriptPanel(kind, dropdown, scripts, always)

    def show_chosen(chosen):
        updates = [gr.update(visible=script.title == chosen) for script in scripts]
        return updates[0] if len(updates) == 1 else updates  # Gradio takes one output's value unwrapped

    if scripts:
        dropdown.change(
            show_chosen,
            inputs=dropdown,
            outputs=[script.container for script in scripts],
            show_progress="hidden",
            api_visibility="private",
        )
    return panel


def script_choices(titles: Sequence[str]) -> list[str]:
    """The dropdown's entries for the scripts the host has now."""
    return [NO_SCRIPT, *titles]
