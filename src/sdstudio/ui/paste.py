"""Infotext to UI fields: what "Send to txt2img/img2img" and PNG Info's buttons fill in.

The generation tabs key their components by request field name (`prompt`, `steps`,
`hr_scale`, ...), so pasting is a mapping from infotext to those names, as A1111's
`parameters_copypaste` does, with the engine's parser doing the reading. Values the
UI shows differently from the request (sampler "Use same sampler", seeds as numbers)
are adjusted here, so every tab pastes the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sdstudio.engine.request import SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER  # "the first pass's"

if TYPE_CHECKING:
    from sdstudio.ui.scripts import ScriptControls


def fields_from_infotext(infotext: str, kind: str) -> dict[str, Any]:
    """Request-field values found in `infotext`, for a "txt2img" or "img2img" tab."""
    from sdstudio.engine.infotext import parse_generation_parameters

    if not infotext or not infotext.strip():
        return {}
    return fields_from_parameters(parse_generation_parameters(infotext), kind)


def fields_from_parameters(params: dict[str, Any], kind: str) -> dict[str, Any]:
    """Request-field values from an infotext's parsed parameters, for a "txt2img" or "img2img" tab."""
    from sdstudio.engine.infotext import request_fields_from_parameters

    if not params:
        return {}
    fields = request_fields_from_parameters(params, kind)
    fields.pop("override_settings", None)
    if kind == "txt2img":
        fields.setdefault("hr_sampler_name", SAME_SAMPLER)
        fields.setdefault("hr_scheduler", SAME_SCHEDULER)
        fields.setdefault("hr_checkpoint_name", SAME_CHECKPOINT)
        if not fields.get("enable_hr"):
            # A1111 leaves hires fields alone when the image had no hires pass.
            for name in [n for n in fields if n.startswith("hr_")]:
                fields.pop(name)
    if "Model" in params:
        fields["sd_model_checkpoint"] = params["Model"]
    if "Model hash" in params:
        fields["sd_model_hash"] = params["Model hash"]
    return fields


def values_for_components(fields: dict[str, Any], names: list[str], skip: Any) -> list[Any]:
    """One value per component name, `skip` (leave as is) for the names infotext did not have."""
    return [fields[name] if name in fields else skip for name in names]


def alwayson_values(
    scripts: Sequence[ScriptControls], found: dict[str, list[Any]], params: dict[str, Any], skip: Any
) -> list[Any]:
    """One value per always-on script control, in panel order: what the infotext gave, else `skip`.

    `found` is the host's `args_from_infotext` (each script's arguments, coerced); only the
    arguments whose `infotext_fields` key the infotext has are pasted, the others are left as
    they are (A1111's paste).
    """
    from sdstudio.ui.scripts import shown_value

    values = []
    for script in scripts:
        args = found.get(script.name, [])
        pasted = {index for index, key in script.infotext_fields if key in params and index < len(args)}
        for index, control in enumerate(script.controls):
            values.append(shown_value(control, args[index]) if index in pasted else skip)
    return values


def match_checkpoint(fields: dict[str, Any], titles: list[str]) -> str | None:
    """The dropdown title for the infotext's model (by name, then by short hash), if installed."""
    name = str(fields.get("sd_model_checkpoint") or "")
    short_hash = str(fields.get("sd_model_hash") or "")
    if name:
        for title in titles:
            stem = title.rsplit("/", 1)[-1].split(" [", 1)[0].rsplit(".", 1)[0]
            if title == name or stem == name:
                return title
    if short_hash:
        for title in titles:
            if f"[{short_hash}" in title:
                return title
    return None
