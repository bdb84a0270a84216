"""The controls a script's `ui()` returns: what the web UI draws and what the API's script-info lists.

A1111 scripts return Gradio components; sdstudio scripts return these descriptions, which
the web UI turns into Gradio components and `/sdapi/v1/script-info` lists with A1111's
fields (label, value, minimum, maximum, step, choices). The order of the returned list is
the order of the script's arguments (`run(p, *args)`, the API's `script_args`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Control:
    """One argument of a script: its label and default value."""

    label: str = ""
    value: Any = None
    visible: bool = True
    info: str = ""  # a hint shown under the control
    elem_id: str = ""

    kind = "control"

    def default(self) -> Any:
        """The value a request that leaves this argument out gets."""
        return self.value

    def coerce(self, value: Any) -> Any:
        """A value from a request as the script expects it (a number for a slider...); ValueError when impossible."""
        return value

    def info_dict(self) -> dict[str, Any]:
        """A1111's /sdapi/v1/script-info entry for this argument."""
        data = {key: value for key, value in asdict(self).items() if key in ("label", "value")}
        data.update(minimum=None, maximum=None, step=None, choices=None)
        return data


@dataclass
class Slider(Control):
    value: float = 0
    minimum: float = 0
    maximum: float = 100
    step: float = 1

    kind = "slider"

    def coerce(self, value: Any) -> Any:
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return int(number) if float(self.step).is_integer() and float(self.value).is_integer() else number

    def info_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "step": self.step,
            "choices": None,
        }


@dataclass
class Number(Slider):
    minimum: float = float("-inf")
    maximum: float = float("inf")

    kind = "number"

    def info_dict(self) -> dict[str, Any]:
        data = super().info_dict()
        data.update(minimum=None, maximum=None)  # JSON has no infinity
        return data


@dataclass
class Checkbox(Control):
    value: bool = False

    kind = "checkbox"

    def coerce(self, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return bool(value)


@dataclass
class Textbox(Control):
    value: str = ""
    lines: int = 1
    placeholder: str = ""

    kind = "textbox"

    def coerce(self, value: Any) -> Any:
        return "" if value is None else str(value)


@dataclass
class Dropdown(Control):
    """A choice from `choices`; `type="index"` passes the chosen position, as A1111's index dropdowns do."""

    choices: list[str] = field(default_factory=list)
    type: str = "value"
    multiselect: bool = False

    kind = "dropdown"

    def default(self) -> Any:
        if self.type == "index" and not self.multiselect:  # the script takes the default choice's position too
            return self.choices.index(self.value) if self.value in self.choices else 0
        return self.value

    def coerce(self, value: Any) -> Any:
        if self.multiselect:
            return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
        if self.type == "index":
            if isinstance(value, str) and value in self.choices:
                return self.choices.index(value)  # a client may send the label instead of the index
            index = int(value)
            if not 0 <= index < max(1, len(self.choices)):
                raise ValueError(f"must be an index below {len(self.choices)}")
            return index
        return value

    def info_dict(self) -> dict[str, Any]:
        data = super().info_dict()
        data["choices"] = list(self.choices)
        return data


@dataclass
class Radio(Dropdown):
    kind = "radio"


@dataclass
class CheckboxGroup(Dropdown):
    value: list[str] = field(default_factory=list)
    multiselect: bool = True

    kind = "checkbox_group"


@dataclass
class File(Control):
    """A file upload; over the API the file's text (or None)."""

    kind = "file"


@dataclass
class Image(Control):
    """An image input; over the API a base64 image (or None)."""

    kind = "image"


@dataclass
class HTML(Control):
    """Text shown among a script's controls (A1111 `gr.HTML`); it still takes an argument's place, unused."""

    kind = "html"
