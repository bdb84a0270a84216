"""A1111's per-line prompt syntax ("Prompts from file or textbox"): `--prompt "..." --steps N ...`.

One parser for every front end that reads prompt lines: the CLI's `--from-file` and the
built-in "Prompts from file or textbox" script. A line that starts with `--` is a list of
options (A1111 `cmdargs`); any other line is just a prompt. Unlike A1111, which falls back to
using a bad option line as a prompt, a bad line is an error naming the line and the option,
so a typo never silently generates the wrong picture.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sdstudio.engine.samplers import resolve_sampler_and_schedule, sampler_names
from sdstudio.errors import InvalidRequest


def _line_bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return value.lower() == "true"


def _one_style(value: str) -> list[str]:
    return [value]


# A1111 scripts/prompts_from_file.py: the options a line may give, each as the request field
# it sets and the type of its value. `sampler_index` picks by position in the sampler list
# (`/sdapi/v1/samplers` order) when the line names no `sampler_name`; `sd_model` names a
# checkpoint, which each front end resolves (or refuses) itself.
LINE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "sd_model": str,
    "outpath_samples": str,
    "outpath_grids": str,
    "prompt_for_display": str,  # A1111 shows it instead of the prompt; there is no such display here
    "prompt": str,
    "negative_prompt": str,
    "styles": _one_style,
    "seed": int,
    "subseed_strength": float,
    "subseed": int,
    "seed_resize_from_h": int,
    "seed_resize_from_w": int,
    "sampler_index": int,
    "sampler_name": str,
    "batch_size": int,
    "n_iter": int,
    "steps": int,
    "cfg_scale": float,
    "width": int,
    "height": int,
    "restore_faces": _line_bool,
    "tiling": _line_bool,
    "do_not_save_samples": _line_bool,
    "do_not_save_grid": _line_bool,
}
_VALUE_KINDS: dict[Callable[[str], Any], str] = {int: "an integer", float: "a number", _line_bool: "true or false"}
_PROMPT_OPTIONS = ("prompt", "negative_prompt")  # their value runs on to the next --option, as in A1111


def parse_prompt_line(line: str, number: int, field: str, refused: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Request fields from one line: a plain prompt, or A1111's `--prompt "..." --steps N ...`.

    `refused` maps options this front end does not take to the reason given; errors are
    InvalidRequest(field, "line NUMBER: ...").
    """

    def refuse(message: str) -> InvalidRequest:
        return InvalidRequest(field, f"line {number}: {message}")

    if not line.startswith("--"):
        return {"prompt": line}
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise refuse(f"cannot split the line into options ({exc})") from None
    fields: dict[str, Any] = {}
    pos = 0
    while pos < len(tokens):
        option = tokens[pos]
        name = option[2:].replace("-", "_")
        if not option.startswith("--"):
            raise refuse(f"expected an --option, got {option!r}")
        if refused and name in refused:
            raise refuse(f"--{name} {refused[name]}")
        if name not in LINE_OPTIONS:
            known = ", ".join("--" + n for n in LINE_OPTIONS if not refused or n not in refused)
            raise refuse(f"unknown option {option} (known: {known})")
        if pos + 1 == len(tokens):
            raise refuse(f"{option} needs a value")
        end = pos + 2
        if name in _PROMPT_OPTIONS:
            while end < len(tokens) and not tokens[end].startswith("--"):
                end += 1
        value = " ".join(tokens[pos + 1 : end])
        try:
            fields[name] = LINE_OPTIONS[name](value)
        except ValueError:
            expected = _VALUE_KINDS.get(LINE_OPTIONS[name], "a value")
            raise refuse(f"{option} expects {expected}, got {value!r}") from None
        pos = end
    fields.pop("prompt_for_display", None)
    if "sampler_name" in fields and resolve_sampler_and_schedule(fields["sampler_name"], None) is None:
        raise refuse(f"--sampler_name: unknown sampler {fields['sampler_name']!r}")
    index = fields.pop("sampler_index", None)
    if index is not None and "sampler_name" not in fields:
        names = sampler_names()
        if not 0 <= index < len(names):
            raise refuse(f"--sampler_index {index}: there are {len(names)} samplers (0..{len(names) - 1})")
        fields["sampler_name"] = names[index]
    return fields


def parse_prompt_lines(
    lines: Iterable[str], field: str, refused: Mapping[str, str] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """(line number, request fields) for each non-blank line, numbered from 1 as an editor shows them."""
    return [
        (number, parse_prompt_line(line.strip(), number, field, refused))
        for number, line in enumerate(lines, 1)
        if line.strip()
    ]
