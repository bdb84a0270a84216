"""X/Y/Z plot: A1111's scripts/xyz_grid.py (v1.10) on sdstudio's scripts contract.

One job per combination of the values of up to three axes (X: columns, Y: rows, Z: grids
side by side), each run from a copy of the request with that cell's values applied. The
result is A1111's: the annotated grid first (the Z grids combined), then the X/Y sub-grids
when asked for, then each cell's image with its own infotext when asked for.

The axes keep A1111's list and order for each tab, so the axis indexes clients send in
`script_args` pick the same axes. An axis for something sdstudio does not have stays in
the list and is refused by name when chosen.

Values are comma separated (CSV quoting for a value with a comma); numbers also take
`1-5`, `1-10 (+2)` (a step) and `1-10 [5]` (a count). Prompt S/R replaces its first value in
the prompt and the negative prompt; Prompt order tries every order of its values. An axis
with a fixed set of choices (samplers, checkpoints...) takes its values from its
`*_values_dropdown` argument unless `csv_mode` is on; sdstudio reads the textbox too when
that list is empty (A1111 would plot nothing). Every value is checked before the first job:
a bad one is an error naming the axis and the value.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from sdstudio.config import IMAGES_PER_JOB_CEILING
from sdstudio.engine.request import hires_upscaler_names
from sdstudio.engine.saving import image_grid
from sdstudio.engine.scripting import fix_seed
from sdstudio.engine.seeds import fixed_seed
from sdstudio.errors import InvalidRequest, SdStudioError
from sdstudio.extensions.scripts import (
    Checkbox,
    Control,
    Dropdown,
    Processed,
    Script,
    Slider,
    StableDiffusionProcessing,
    Textbox,
    process_images,
)
from sdstudio.extensions.scripts.grid_legend import GridAnnotation, draw_grid_annotations
from sdstudio.postprocess.image_files import format_infotext_parameters

TITLE = "X/Y/Z plot"
GRID_MAX_MEGAPIXELS = 200  # A1111's img_max_size_mp default: the largest plot it draws
ValueType = Literal["int", "float", "str", "permutations"]
Apply = Callable[[StableDiffusionProcessing, Any, list[Any]], None]
Confirm = Callable[[StableDiffusionProcessing, list[Any]], None]


# What an axis does to a cell's p (A1111's apply functions).


def set_field(name: str) -> Apply:
    """Set a request field (A1111 apply_field)."""

    def apply(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
        setattr(p, name, value)

    return apply


def set_option(name: str) -> Apply:
    """Override a setting for the cell's job (A1111 apply_override)."""

    def apply(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
        p.override_settings[name] = value

    return apply


def do_nothing(p: StableDiffusionProcessing, value: Any, values: list[Any]) -> None:
    pass


def _prompts(prompt: str | list[str]) -> list[str]:
    return prompt if isinstance(prompt, list) else [prompt]


def _replaced(prompt: str | list[str], old: str, new: str) -> str | list[str]:
    if isinstance(prompt, list):
        return [text.replace(old, new) for text in prompt]
    return prompt.replace(old, new)


def replace_prompt(p: StableDiffusionProcessing, value: str, values: list[Any]) -> None:
    """Prompt S/R: the axis's first value, wherever it is in the prompts, becomes this value."""
    p.prompt = _replaced(p.prompt, values[0], value)
    p.negative_prompt = _replaced(p.negative_prompt, values[0], value)


def _reordered(prompt: str, order: tuple[str, ...]) -> str:
    # The tokens' places in the prompt, in prompt order, get the tokens in the order asked for.
    places = sorted(order, key=prompt.find)
    parts, rest = [], prompt
    for token in places:
        at = rest.find(token)
        parts.append(rest[:at])
        rest = rest[at + len(token) :]
    return "".join(part + token for part, token in zip(parts, order)) + rest


def reorder_prompt(p: StableDiffusionProcessing, value: tuple[str, ...], values: list[Any]) -> None:
    """Prompt order: the axis's values, found in the prompt, are put in this order."""
    if isinstance(p.prompt, list):
        p.prompt = [_reordered(text, value) for text in p.prompt]
    else:
        p.prompt = _reordered(p.prompt, value)


def closest_checkpoint(p: StableDiffusionProcessing, name: str) -> str | None:
    """The checkpoint title `name` means (A1111 get_closet_checkpoint_match): exact, then the shortest containing it."""
    titles = p._services().checkpoint_names()
    wanted = name.strip()
    for title in titles:
        if wanted in (title, title.split(" [", 1)[0], os.path.splitext(title.split(" [", 1)[0])[0]):
            return title
    for query in (wanted, re.sub(r"\s\[[^]]*]$", "", wanted)):
        found = sorted((title for title in titles if query and query in title), key=len)
        if found:
            return found[0]
    return None


def set_checkpoint(p: StableDiffusionProcessing, value: str, values: list[Any]) -> None:
    p.override_settings["sd_model_checkpoint"] = closest_checkpoint(p, value)


def set_refiner(p: StableDiffusionProcessing, value: str, values: list[Any]) -> None:
    set_field("refiner_checkpoint")(p, None if _is_none(value) else closest_checkpoint(p, value), values)


def _is_none(value: str) -> bool:
    return value.strip() in ("", "None", "none")


def known_vae(p: StableDiffusionProcessing, name: str) -> str | None:
    """The sd_vae value for a VAE axis value (A1111 find_vae): Automatic, None, or a VAE file, any case."""
    wanted = name.strip().lower()
    if wanted in ("auto", "automatic"):
        return "Automatic"
    if wanted == "none":
        return "None"
    return next((vae for vae in p._services().vae_names() if vae.lower() == wanted), None)


def set_vae(p: StableDiffusionProcessing, value: str, values: list[Any]) -> None:
    p.override_settings["sd_vae"] = known_vae(p, value)


def add_styles(p: StableDiffusionProcessing, value: str, values: list[Any]) -> None:
    p.styles = [*p.styles, *value.split(",")]


def set_face_restore(p: StableDiffusionProcessing, value: str, values: list[Any]) -> None:
    """Face restore: "CodeFormer"/"GFPGAN" restore with that model, "true"/"yes"/"1" with the chosen one."""
    choice = value.strip().lower()
    models = {"codeformer": "CodeFormer", "gfpgan": "GFPGAN"}
    if choice in models:
        p.override_settings["face_restoration_model"] = models[choice]
    p.restore_faces = choice in models or choice in ("true", "yes", "y", "1")


def _size(value: str) -> tuple[int, int]:
    width, _, height = value.partition("x")
    return int(width.strip()), int(height.strip())


def set_size(p: StableDiffusionProcessing, value: str, values: list[Any]) -> None:
    p.width, p.height = _size(value)


# Checks of an axis's values before anything runs (A1111's confirm functions): ValueError says what is wrong.


def search_string_in_prompt(p: StableDiffusionProcessing, values: list[Any]) -> None:
    texts = _prompts(p.prompt) + _prompts(p.negative_prompt)
    if not any(values[0] in text for text in texts):
        raise ValueError(f"did not find {values[0]!r} in the prompt or negative prompt")


def tokens_in_prompt(p: StableDiffusionProcessing, values: list[Any]) -> None:
    for token in values[0] if values else ():
        if not all(token in text for text in _prompts(p.prompt)):
            raise ValueError(f"did not find {token!r} in the prompt")


def known_checkpoints(p: StableDiffusionProcessing, values: list[Any]) -> None:
    for value in values:
        if closest_checkpoint(p, value) is None:
            known = ", ".join(p._services().checkpoint_names()) or "none"
            raise ValueError(f"unknown checkpoint {value!r}; known: {known}")


def known_checkpoints_or_none(p: StableDiffusionProcessing, values: list[Any]) -> None:
    known_checkpoints(p, [value for value in values if not _is_none(value)])


def known_vaes(p: StableDiffusionProcessing, values: list[Any]) -> None:
    for value in values:
        if known_vae(p, value) is None:
            known = ", ".join(["Automatic", "None", *p._services().vae_names()])
            raise ValueError(f"unknown VAE {value!r}; known: {known}")


def known_hires_upscalers(p: StableDiffusionProcessing, values: list[Any]) -> None:
    known = hires_upscaler_names(p._services().upscaler_names())
    for value in values:
        if value not in known:
            raise ValueError(f"unknown upscaler {value!r}; known: {', '.join(known)}")


def one_of(*choices: str) -> Confirm:
    def confirm(p: StableDiffusionProcessing, values: list[Any]) -> None:
        for value in values:
            if value not in choices:
                raise ValueError(f"{value!r} is not one of {', '.join(choices)}")

    return confirm


def img2img_only(p: StableDiffusionProcessing, values: list[Any]) -> None:
    if not p.is_img2img:
        raise ValueError("applies to img2img only (A1111 ignores it in txt2img)")


def sizes(p: StableDiffusionProcessing, values: list[Any]) -> None:
    for value in values:
        try:
            _size(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a size like 512x768") from None


# How a value is written in the legend (A1111's format_value functions).


def _rounded(value: Any) -> Any:
    return round(value, 8) if isinstance(value, float) else value


def labelled(axis: Axis, value: Any) -> str:
    return f"{axis.label}: {_rounded(value)}"


def plain(axis: Axis, value: Any) -> str:
    return str(_rounded(value))


def joined(axis: Axis, value: Any) -> str:
    return ", ".join(value)


def no_text(axis: Axis, value: Any) -> str:
    return ""


def file_name(axis: Axis, value: Any) -> str:
    return os.path.basename(str(value))


@dataclass(frozen=True)
class Axis:
    """One choice of X/Y/Z type (A1111 AxisOption)."""

    label: str
    value_type: ValueType
    apply: Apply = do_nothing
    tab: str = ""  # "txt2img" or "img2img" when the axis shows on one tab only
    legend: Callable[[Axis, Any], str] = labelled
    cost: float = 0.0  # slow-to-change axes (checkpoints) are looped over outermost
    has_choices: bool = False  # values come from the dropdown (A1111: AxisOption.choices is set)
    confirm: Confirm | None = None
    missing: str = ""  # why sdstudio cannot plot this axis ("": it can)


def missing(label: str, value_type: ValueType, why: str, **more: Any) -> Axis:
    """An A1111 axis sdstudio lacks: kept in the list (so indexes match), refused when chosen."""
    return Axis(label, value_type, missing=why, **more)


NO_TOME = "token merging (ToMe) is not implemented"
FIXED_SCHEDULE = "the noise schedules use the model's own sigma range and rho; there is no option to change them"
FIXED_BETA = "the Beta schedule's shape is fixed at A1111's defaults (alpha 0.6, beta 0.6)"

AXES: tuple[Axis, ...] = (
    Axis("Nothing", "str", legend=no_text),
    Axis("Seed", "int", set_field("seed")),
    Axis("Var. seed", "int", set_field("subseed")),
    Axis("Var. strength", "float", set_field("subseed_strength")),
    Axis("Steps", "int", set_field("steps")),
    Axis("Hires steps", "int", set_field("hr_second_pass_steps"), tab="txt2img"),
    Axis("CFG Scale", "float", set_field("cfg_scale")),
    missing("Image CFG Scale", "float", "only instruct-pix2pix models use it, and sdstudio runs none", tab="img2img"),
    Axis("Prompt S/R", "str", replace_prompt, legend=plain, confirm=search_string_in_prompt),
    Axis("Prompt order", "permutations", reorder_prompt, legend=joined, confirm=tokens_in_prompt),
    Axis("Sampler", "str", set_field("sampler_name"), tab="txt2img", legend=plain, has_choices=True),
    Axis("Hires sampler", "str", set_field("hr_sampler_name"), tab="txt2img", has_choices=True),
    Axis("Sampler", "str", set_field("sampler_name"), tab="img2img", legend=plain, has_choices=True),
    Axis(
        "Checkpoint name",
        "str",
        set_checkpoint,
        legend=file_name,
        cost=1.0,
        has_choices=True,
        confirm=known_checkpoints,
    ),
    missing(
        "Negative Guidance minimum sigma",
        "float",
        "NGMS (skipping the negative prompt at low sigmas) is not implemented",
    ),
    Axis("Sigma Churn", "float", set_field("s_churn")),
    Axis("Sigma min", "float", set_field("s_tmin")),
    Axis("Sigma max", "float", set_field("s_tmax")),
    Axis("Sigma noise", "float", set_field("s_noise")),
    Axis("Schedule type", "str", set_field("scheduler"), has_choices=True),
    missing("Schedule min sigma", "float", FIXED_SCHEDULE),
    missing("Schedule max sigma", "float", FIXED_SCHEDULE),
    missing("Schedule rho", "float", FIXED_SCHEDULE),
    missing("Skip Early CFG", "float", "skipping guidance on the early steps is not implemented"),
    missing("Beta schedule alpha", "float", FIXED_BETA),
    missing("Beta schedule beta", "float", FIXED_BETA),
    Axis("Eta", "float", set_field("eta")),
    Axis("Clip skip", "int", set_option("CLIP_stop_at_last_layers")),
    Axis("Denoising", "float", set_field("denoising_strength")),
    Axis("Initial noise multiplier", "float", set_field("initial_noise_multiplier"), confirm=img2img_only),
    missing("Extra noise", "float", "extra noise for img2img is not implemented"),
    Axis(
        "Hires upscaler",
        "str",
        set_field("hr_upscaler"),
        tab="txt2img",
        has_choices=True,
        confirm=known_hires_upscalers,
    ),
    missing("Cond. Image Mask Weight", "float", "the inpainting conditioning mask weight is fixed at 1", tab="img2img"),
    Axis("VAE", "str", set_vae, cost=0.7, has_choices=True, confirm=known_vaes),
    Axis("Styles", "str", add_styles, has_choices=True),
    missing("UniPC Order", "int", "the UniPC order is not an option here", cost=0.5),
    Axis("Face restore", "str", set_face_restore, legend=plain),
    missing("Token merging ratio", "float", NO_TOME),
    missing("Token merging ratio high-res", "float", NO_TOME),
    missing(
        "Always discard next-to-last sigma", "str", "each sampler discards it or not as A1111's does", has_choices=True
    ),
    missing("SGM noise multiplier", "str", "the SGM noise multiplier is not implemented", has_choices=True),
    Axis(
        "Refiner checkpoint",
        "str",
        set_refiner,
        legend=file_name,
        cost=1.0,
        has_choices=True,
        confirm=known_checkpoints_or_none,
    ),
    Axis("Refiner switch at", "float", set_field("refiner_switch_at")),
    Axis("RNG source", "str", set_option("randn_source"), has_choices=True, confirm=one_of("GPU", "CPU", "NV")),
    missing("FP8 mode", "str", "FP8 weight storage is not implemented", cost=0.9, has_choices=True),
    Axis("Size", "str", set_size, confirm=sizes),
)
"""A1111 v1.10's axis_options, in its order (each tab shows the ones without a tab and its own)."""


def axes_for(is_img2img: bool) -> list[Axis]:
    """The axes of a tab, in A1111's order: their positions are the X/Y/Z type indexes."""
    tab = "img2img" if is_img2img else "txt2img"
    return [axis for axis in AXES if axis.tab in ("", tab)]


# Values


_NUMBER = {"int": r"[+-]?\s*\d+", "float": r"[+-]?\s*\d+(?:\.\d*)?"}
_STEP_RANGES = {kind: re.compile(rf"\s*({n})\s*-\s*({n})(?:\s*\(\s*({n})\s*\))?\s*") for kind, n in _NUMBER.items()}
_COUNT_RANGES = {kind: re.compile(rf"\s*({n})\s*-\s*({n})\s*\[\s*(\d+)\s*\]\s*") for kind, n in _NUMBER.items()}


def csv_values(text: str) -> list[str]:
    """Comma-separated values, CSV-quoted where a value holds a comma, each stripped; ValueError if unreadable."""
    try:
        return [value.strip() for row in csv.reader(io.StringIO(text), skipinitialspace=True) for value in row]
    except csv.Error as exc:
        raise ValueError(f"the values cannot be read as comma-separated values: {exc}") from None


def csv_text(values: list[str]) -> str:
    """The values as one CSV line (what the infotext records for a dropdown axis)."""
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue().strip()


def _number(text: str, kind: str) -> float:
    cleaned = text.replace(" ", "")
    number = int(cleaned) if kind == "int" else float(cleaned)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def expand_numbers(values: list[str], kind: str, most: int) -> list[float]:
    """Numbers from `1`, `1-5`, `1-10 (+2)` and `1-10 [5]` entries (ends included), at most `most` of them."""
    numbers: list[float] = []
    for value in values:
        if not value.strip():
            continue
        by_step = _STEP_RANGES[kind].fullmatch(value)
        by_count = _COUNT_RANGES[kind].fullmatch(value)
        if by_step:
            start, end = _number(by_step[1], kind), _number(by_step[2], kind)
            step = _number(by_step[3], kind) if by_step[3] else 1
            if step == 0:
                raise ValueError(f"{value!r} has a step of 0")
            count = max(0, math.floor((end - start) / step + 1e-9) + 1)
            _check_count(count, most, value)
            numbers += [start + i * step for i in range(count)]
        elif by_count:
            start, end = _number(by_count[1], kind), _number(by_count[2], kind)
            count = int(by_count[3])
            _check_count(count, most, value)
            # Evenly spaced, both ends included (numpy.linspace); whole numbers are truncated, as A1111's.
            spaced = [start + i * (end - start) / (count - 1) for i in range(count - 1)] + [end] if count > 1 else []
            numbers += [start] if count == 1 else [int(x) for x in spaced] if kind == "int" else spaced
        else:
            try:
                numbers.append(_number(value, kind))
            except ValueError:  # "inf" and "nan" included
                raise ValueError(f"{value!r} is not a {'whole ' if kind == 'int' else ''}number") from None
        _check_count(len(numbers), most, value)
    return [int(x) for x in numbers] if kind == "int" else [float(x) for x in numbers]


def _check_count(count: int, most: int, value: str) -> None:
    if count > most:
        raise ValueError(f"{value!r} gives over {most} values (setting limit_images_per_job)")


# The script


AXIS_NAMES = ("X", "Y", "Z")


@dataclass
class PlotAxis:
    """One axis of a run: its type, its values and what the infotext records."""

    name: str  # "X", "Y" or "Z"
    axis: Axis
    values: list[Any]
    text: str  # the values as given (A1111's "X Values")
    vary_seeds: bool

    def fail(self, message: str) -> InvalidRequest:
        return InvalidRequest("script_args", f"{TITLE}: {self.name} axis {self.axis.label!r}: {message}")


class XYZPlot(Script):
    """A1111's X/Y/Z plot (its arguments in A1111's order, so positional script_args work)."""

    infotext_fields = [(0, "X Type"), (1, "X Values"), (3, "Y Type"), (4, "Y Values"), (6, "Z Type"), (7, "Z Values")]

    def title(self) -> str:
        return TITLE

    def ui(self, is_img2img: bool) -> list[Control]:
        labels = [axis.label for axis in axes_for(is_img2img)]
        controls: list[Control] = []
        for name, default in zip(AXIS_NAMES, (labels[1], labels[0], labels[0])):
            controls += [
                Dropdown(label=f"{name} type", value=default, choices=labels, type="index"),
                Textbox(label=f"{name} values"),
                Dropdown(label=f"{name} values", value=[], multiselect=True, visible=False),
            ]
        return [
            *controls,
            Checkbox(label="Draw legend", value=True),
            Checkbox(label="Include Sub Images", value=False),
            Checkbox(label="Include Sub Grids", value=False),
            Checkbox(label="Keep -1 for seeds", value=False),
            Checkbox(label="Vary seeds for X", value=False),
            Checkbox(label="Vary seeds for Y", value=False),
            Checkbox(label="Vary seeds for Z", value=False),
            Slider(label="Grid margins (px)", value=0, minimum=0, maximum=500, step=2),
            Checkbox(label="Use text inputs instead of dropdowns", value=False),
        ]

    def run(
        self,
        p: StableDiffusionProcessing,
        x_type: Any,
        x_values: str,
        x_values_dropdown: list[str],
        y_type: Any,
        y_values: str,
        y_values_dropdown: list[str],
        z_type: Any,
        z_values: str,
        z_values_dropdown: list[str],
        draw_legend: bool,
        include_lone_images: bool,
        include_sub_grids: bool,
        no_fixed_seeds: bool,
        vary_seeds_x: bool,
        vary_seeds_y: bool,
        vary_seeds_z: bool,
        margin_size: float,
        csv_mode: bool,
        *_: Any,
    ) -> Processed:
        settings = p.settings
        if not no_fixed_seeds:
            fix_seed(p)
        if not settings.return_grid:
            p.batch_size = 1  # a cell is its job's first image: with return_grid, the job's grid
        most = settings.limit_images_per_job or IMAGES_PER_JOB_CEILING
        given = (
            (x_type, x_values, x_values_dropdown, vary_seeds_x),
            (y_type, y_values, y_values_dropdown, vary_seeds_y),
            (z_type, z_values, z_values_dropdown, vary_seeds_z),
        )
        axes = [
            self.plot_axis(p, name, *args, csv_mode=bool(csv_mode), no_fixed_seeds=bool(no_fixed_seeds), most=most)
            for name, args in zip(AXIS_NAMES, given)
        ]
        check_plot_size(p, axes, most)
        plot = Plot(p, axes, bool(no_fixed_seeds))
        return plot.run(bool(draw_legend), bool(include_lone_images), bool(include_sub_grids), int(margin_size))

    def plot_axis(
        self,
        p: StableDiffusionProcessing,
        name: str,
        type_index: Any,
        text: str,
        dropdown: list[str] | None,
        vary_seeds: bool,
        csv_mode: bool,
        no_fixed_seeds: bool,
        most: int,
    ) -> PlotAxis:
        """One axis's checked values (A1111 process_axis + confirm + fix_axis_seeds)."""
        axes = axes_for(p.is_img2img)
        index = type_index if isinstance(type_index, int) else _label_index(axes, type_index)
        if index is None or not 0 <= index < len(axes):
            raise InvalidRequest("script_args", f"{TITLE}: {name} type {type_index!r} is not an axis of this tab")
        axis = axes[index]
        plot_axis = PlotAxis(name, axis, [0], "", bool(vary_seeds))
        if axis.label == "Nothing":
            return plot_axis
        if axis.missing:
            raise plot_axis.fail(f"sdstudio cannot plot it: {axis.missing}")
        listed = [str(value) for value in dropdown or []]
        try:
            if axis.has_choices and not csv_mode and listed:
                plot_axis.text, raw = csv_text(listed), listed
            else:
                plot_axis.text, raw = str(text or ""), csv_values(str(text or ""))
            plot_axis.values = self.typed_values(axis, raw, most)
        except ValueError as exc:
            raise plot_axis.fail(str(exc)) from None
        if not plot_axis.values:
            raise plot_axis.fail(f"no values given (the {name} values argument is empty)")
        if axis.label in ("Seed", "Var. seed") and not no_fixed_seeds:
            plot_axis.values = [fixed_seed(value) for value in plot_axis.values]
        try:
            if axis.confirm is not None:
                axis.confirm(p, plot_axis.values)
        except ValueError as exc:
            raise plot_axis.fail(str(exc)) from None
        for value in plot_axis.values:
            self.check_value(p, plot_axis, value)
        return plot_axis

    @staticmethod
    def typed_values(axis: Axis, raw: list[str], most: int) -> list[Any]:
        if axis.value_type in ("int", "float"):
            return expand_numbers(raw, axis.value_type, most)
        if axis.value_type == "permutations":
            if math.factorial(len(raw)) > most:
                raise ValueError(f"{len(raw)} values give over {most} orders (setting limit_images_per_job)")
            return list(itertools.permutations(raw))
        return list(raw)

    @staticmethod
    def check_value(p: StableDiffusionProcessing, plot_axis: PlotAxis, value: Any) -> None:
        """Apply `value` to a copy of p and validate it as a request and settings: errors name the axis and value."""
        trial = p.copy()
        try:
            plot_axis.axis.apply(trial, value, plot_axis.values)
            trial.to_request()
            trial.settings.merged(trial.override_settings, field="override_settings")
        except InvalidRequest as exc:
            raise plot_axis.fail(f"value {value!r}: {exc.reason} ({exc.field})") from None
        except ValueError as exc:
            raise plot_axis.fail(f"value {value!r}: {exc}") from None


def _label_index(axes: list[Axis], label: Any) -> int | None:
    """A type given by its label (A1111's API takes the index; the label is accepted too)."""
    wanted = str(label).strip().lower()
    return next((i for i, axis in enumerate(axes) if axis.label.lower() == wanted), None)


def check_plot_size(p: StableDiffusionProcessing, axes: list[PlotAxis], most: int) -> None:
    """Refuse a plot over the image limit or too large to draw (A1111 img_max_size_mp)."""
    cells = math.prod(len(axis.values) for axis in axes)
    images = cells * p.batch_size * p.n_iter
    if images > most:
        raise InvalidRequest(
            "script_args",
            f"{TITLE}: {' × '.join(str(len(a.values)) for a in axes)} cells × {p.batch_size * p.n_iter} images "
            f"= {images} images is over the limit of {most} (setting limit_images_per_job)",
        )
    megapixels = cells * p.width * p.height / 1e6
    if megapixels >= GRID_MAX_MEGAPIXELS:
        raise InvalidRequest(
            "script_args",
            f"{TITLE}: the grid would be {megapixels:.0f} megapixels; the most is {GRID_MAX_MEGAPIXELS}",
        )


def loop_order(axes: list[PlotAxis]) -> list[int]:
    """Which axes to loop over, outermost first: the costliest to change (A1111's rule, ties as A1111 breaks them)."""
    x, y, z = (axis.axis.cost for axis in axes)
    if x > y and x > z:
        return [0, 1, 2] if y > z else [0, 2, 1]
    if y > x and y > z:
        return [1, 0, 2] if x > z else [1, 2, 0]
    if z > x and z > y:
        return [2, 0, 1] if x > y else [2, 1, 0]
    return [2, 1, 0]


def with_parameters(infotext: str, params: dict[str, Any]) -> str:
    """`infotext` with `params` on its parameter line, before "Version" as A1111's create_infotext orders them."""
    added = format_infotext_parameters(params)
    if not added:
        return infotext
    head, newline, last = infotext.rpartition("\n")
    at = last.rfind(", Version: ")
    last = f"{last[:at]}, {added}{last[at:]}" if at >= 0 else (f"{last}, {added}" if last else added)
    return f"{head}{newline}{last}"


@dataclass
class Cell:
    """One combination's job and what it gave."""

    position: tuple[int, int, int]
    result: Processed | None = None
    image: Image.Image | None = None
    error: SdStudioError | None = None


class Plot:
    """One run of the X/Y/Z plot: the cells' jobs, then the grids (A1111 draw_xyz_grid)."""

    def __init__(self, p: StableDiffusionProcessing, axes: list[PlotAxis], no_fixed_seeds: bool) -> None:
        self.p = p
        self.axes = axes
        self.no_fixed_seeds = no_fixed_seeds
        self.sizes = [len(axis.values) for axis in axes]

    def index(self, ix: int, iy: int, iz: int) -> int:
        return ix + iy * self.sizes[0] + iz * self.sizes[0] * self.sizes[1]

    def positions(self) -> list[tuple[int, int, int]]:
        """Every cell's (ix, iy, iz), in the order the jobs run (slow-changing axes outermost)."""
        order = loop_order(self.axes)
        found = []
        for combination in itertools.product(*(range(self.sizes[i]) for i in order)):
            position = [0, 0, 0]
            for axis_index, value_index in zip(order, combination):
                position[axis_index] = value_index
            found.append((position[0], position[1], position[2]))
        return found

    def cell_p(self, ix: int, iy: int, iz: int) -> StableDiffusionProcessing:
        """The cell's p: a copy with its values applied and, if asked, its seed moved along the axes."""
        pc = self.p.copy()
        for axis, value_index in zip(self.axes, (ix, iy, iz)):
            axis.axis.apply(pc, axis.values[value_index], axis.values)
        x_span = self.sizes[0] if self.axes[0].vary_seeds else 1
        y_span = self.sizes[1] if self.axes[1].vary_seeds else 1
        offsets = (ix, iy * x_span, iz * x_span * y_span)
        base_seed = pc.seed if isinstance(pc.seed, int) else pc.seed[0]
        pc.seed = base_seed + sum(offset for axis, offset in zip(self.axes, offsets) if axis.vary_seeds)
        return pc

    def run_cell(self, cell: Cell) -> None:
        services = self.p._services()
        if services.interrupted:
            return
        try:
            cell.result = process_images(self.cell_p(*cell.position))
        except SdStudioError as exc:  # A1111 leaves the cell empty and goes on
            cell.error = exc
            message = f"{TITLE}: the cell {self.describe(cell)} failed: {exc}"
            if message not in self.p.warnings:
                self.p.warnings.append(message)
            return
        if cell.result.images:
            cell.image = cell.result.images[0]

    def describe(self, cell: Cell) -> str:
        return ", ".join(
            f"{axis.name}={axis.axis.legend(axis.axis, axis.values[i]) or axis.values[i]}"
            for axis, i in zip(self.axes, cell.position)
            if axis.axis.label != "Nothing"
        )

    def run(self, draw_legend: bool, include_lone_images: bool, include_sub_grids: bool, margin: int) -> Processed:
        services = self.p._services()
        positions = self.positions()
        services.set_job_count(len(positions) * self.p.n_iter)
        cells = {position: Cell(position) for position in positions}
        for position in positions:
            self.run_cell(cells[position])
        ordered = sorted(cells.values(), key=lambda cell: self.index(*cell.position))
        done = [cell for cell in ordered if cell.image is not None and cell.result is not None]
        if not done:
            first_error = next((cell.error for cell in ordered if cell.error is not None), None)
            if first_error is not None:
                raise first_error
            return Processed(interrupted=True, warnings=list(self.p.warnings))
        blank = Image.new(done[0].image.mode, done[0].image.size) if done[0].image is not None else None
        images = [cell.image or blank for cell in ordered]
        grids, grid_infotexts = self.grids(images, ordered, draw_legend, margin)
        main = grids[0]
        settings = self.p.settings
        if settings.enable_pnginfo:
            main.info["parameters"] = grid_infotexts[0]
        grid_path = self.p._services().save_grid(self.p, main, grid_infotexts[0])
        shown_grids, shown_infotexts = [main], [grid_infotexts[0]]
        if include_sub_grids:
            if len(grids) > 2:  # A1111 saves the sub-grids only when there are several
                for grid, infotext in zip(grids[1:], grid_infotexts[1:]):
                    services.save_grid(self.p, grid, infotext)
            shown_grids, shown_infotexts = grids, grid_infotexts
        shown_cells = done if include_lone_images else []
        return self.result(shown_grids, shown_infotexts, shown_cells, done, grid_path)

    def grids(
        self, images: list[Image.Image | None], ordered: list[Cell], draw_legend: bool, margin: int
    ) -> tuple[list[Image.Image], list[str]]:
        """The combined grid, then one X/Y grid per Z value; with their infotexts."""
        xs, ys, zs = self.axes
        per_grid = self.sizes[0] * self.sizes[1]
        column_texts = [[GridAnnotation(xs.axis.legend(xs.axis, value))] for value in xs.values]
        row_texts = [[GridAnnotation(ys.axis.legend(ys.axis, value))] for value in ys.values]
        sub_grids, infotexts = [], []
        for iz in range(self.sizes[2]):
            part = [image for image in images[iz * per_grid : (iz + 1) * per_grid] if image is not None]
            grid = image_grid(part, rows=self.sizes[1])
            if draw_legend:
                cell_w, cell_h = max(i.width for i in part), max(i.height for i in part)
                grid = draw_grid_annotations(grid, cell_w, cell_h, column_texts, row_texts, margin)
            sub_grids.append(grid)
            infotexts.append(self.grid_infotext(ordered[iz * per_grid : (iz + 1) * per_grid], with_z=False))
        combined = image_grid(sub_grids, rows=1)
        if draw_legend:
            titles = [[GridAnnotation(zs.axis.legend(zs.axis, value))] for value in zs.values]
            width, height = max(g.width for g in sub_grids), max(g.height for g in sub_grids)
            combined = draw_grid_annotations(combined, width, height, titles, [[GridAnnotation()]])
        main_infotext = self.grid_infotext(ordered[:per_grid], with_z=True)
        return [combined, *sub_grids], [main_infotext, *infotexts]

    def grid_infotext(self, cells: list[Cell], with_z: bool) -> str:
        """A grid's infotext: its first cell's, with the plot's axes (A1111's Script, X Type, X Values...)."""
        base = next((cell.result.infotexts[0] for cell in cells if cell.result and cell.result.infotexts), "")
        params: dict[str, Any] = {"Script": TITLE}
        for axis in self.axes if with_z else self.axes[:2]:
            if axis.axis.label == "Nothing":
                continue
            params[f"{axis.name} Type"] = axis.axis.label
            params[f"{axis.name} Values"] = axis.text
            if axis.axis.label in ("Seed", "Var. seed") and not self.no_fixed_seeds:
                params[f"Fixed {axis.name} Values"] = ", ".join(str(value) for value in axis.values)
        return with_parameters(base, params)

    def result(
        self,
        grids: list[Image.Image],
        grid_infotexts: list[str],
        shown: list[Cell],
        done: list[Cell],
        grid_path: Any,
    ) -> Processed:
        """A1111's Processed: the grids first, then the shown cells, infotexts aligned with the images."""
        results = [cell.result for cell in done if cell.result is not None]
        shown_results = [cell.result for cell in shown if cell.result is not None]
        first = results[0]
        warnings = list(dict.fromkeys([*self.p.warnings, *(w for r in results for w in r.warnings)]))
        processed = Processed(
            images=[*grids, *(cell.image for cell in shown if cell.image is not None)],
            seeds=[r.seeds[0] for r in shown_results],
            subseeds=[r.subseeds[0] for r in shown_results],
            prompts=[r.prompts[0] for r in shown_results],
            negative_prompts=[r.negative_prompts[0] for r in shown_results],
            infotexts=[r.infotexts[0] for r in shown_results],
            saved_paths=[path for r in results for path in r.saved_paths],
            grid_path=grid_path,
            grid_infotext=grid_infotexts[0],
            index_of_first_image=len(grids),
            warnings=warnings,
            interrupted=self.p._services().interrupted or any(r.interrupted for r in results),
        )
        processed.info = {
            **first.info,
            "all_prompts": [r.prompts[0] for r in results],
            "all_negative_prompts": [r.negative_prompts[0] for r in results],
            "all_seeds": [r.seeds[0] for r in results],
            "all_subseeds": [r.subseeds[0] for r in results],
            "index_of_first_image": len(grids),
            "infotexts": [*grid_infotexts, *processed.infotexts],
            "interrupted": processed.interrupted,
            "warnings": warnings,
        }
        return processed
