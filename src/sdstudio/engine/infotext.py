"""Infotext: A1111's "generation parameters" text, written and read back.

Format (A1111 modules/processing.py create_infotext, infotext_utils.py):

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, ...

A value is written JSON-quoted when it contains a comma, colon or newline; a key whose
value equals the key is written alone. Parameters with no value (None) are left out. The
parser follows A1111's `parse_generation_parameters` (same regex and defaults), and
`request_fields_from_infotext` maps its keys back onto request fields, as A1111's
"paste parameters" does.
"""

from __future__ import annotations

import re
from typing import Any

from sdstudio.engine.samplers import resolve_sampler_and_schedule
from sdstudio.postprocess.image_files import format_infotext_parameters, unquote

RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
_SPACES = re.compile(r"\s*")
_WORD_CHARACTER = re.compile(r"\w")
_KEY_CHARACTERS = re.compile(r"[\w \-/]+")


def find_parameters(line: str) -> list[tuple[str, str]]:
    """`RE_PARAM.findall(line)` (A1111's regex), in linear time.

    findall tries RE_PARAM at every position, and each try runs along the whole run of key
    characters after it before it fails: quadratic on long runs of words or spaces, with the
    GIL held (a pasted infotext would stall the server). Every try from a position up to the
    end of that run fails alike unless a ":" ends the run, so the regex is tried only there.
    """
    found: list[tuple[str, str]] = []
    pos = 0
    while pos < len(line):
        spaces = _SPACES.match(line, pos)
        key_start = spaces.end() if spaces else pos
        if not _WORD_CHARACTER.match(line, key_start):
            pos = key_start + 1
            continue
        key = _KEY_CHARACTERS.match(line, key_start)
        key_end = key.end() if key else key_start + 1
        match = None
        if key_end - key_start >= 2 and line.startswith(":", key_end):
            match = RE_PARAM.match(line, pos)
        if match is None:
            pos = key_end
            continue
        found.append((match.group(1), match.group(2)))
        pos = match.end()
    return found


def _format_number(value: Any) -> Any:
    # Whole floats are written as integers ("CFG scale: 7"), as A1111's UI values come out.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def format_infotext(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """The infotext for one image from its prompts and ordered parameters (None = omitted)."""
    params_text = format_infotext_parameters({k: _format_number(v) for k, v in params.items()})
    negative_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_text}\n{params_text}".strip()


def parse_generation_parameters(text: str) -> dict[str, Any]:
    """Parse infotext into A1111's key/value dict ("Prompt", "Steps", "Size-1", ...)."""
    res: dict[str, Any] = {}
    prompt, negative_prompt = "", ""
    done_with_prompt = False
    *lines, lastline = text.strip().split("\n")
    if len(find_parameters(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    for key, value in find_parameters(lastline):
        if value and value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = RE_IMAGESIZE.match(value)
        if size is not None:
            res[f"{key}-1"] = size.group(1)
            res[f"{key}-2"] = size.group(2)
        else:
            res[key] = value
    # A1111's defaults for keys older versions did not write.
    res.setdefault("Clip skip", "1")
    res.setdefault("Schedule type", "Automatic")
    res.setdefault("RNG", "GPU")
    if "Sampler" in res:
        resolved = resolve_sampler_and_schedule(res["Sampler"], res["Schedule type"])
        if resolved is not None:
            res["Sampler"], res["Schedule type"] = resolved[0].name, resolved[1].label
    return res


# Infotext key -> (request field, converter). Hires keys only apply to txt2img.
_FIELD_MAP: dict[str, tuple[str, Any]] = {
    "Prompt": ("prompt", str),
    "Negative prompt": ("negative_prompt", str),
    "Steps": ("steps", int),
    "Sampler": ("sampler_name", str),
    "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Size-1": ("width", int),
    "Size-2": ("height", int),
    "Variation seed": ("subseed", int),
    "Variation seed strength": ("subseed_strength", float),
    "Seed resize from-1": ("seed_resize_from_w", int),
    "Seed resize from-2": ("seed_resize_from_h", int),
    "Denoising strength": ("denoising_strength", float),
    "Eta": ("eta", float),
    "Sigma churn": ("s_churn", float),
    "Sigma tmin": ("s_tmin", float),
    "Sigma tmax": ("s_tmax", float),
    "Sigma noise": ("s_noise", float),
    "Noise multiplier": ("initial_noise_multiplier", float),
    "Mask blur": ("mask_blur", int),
    "Masked area padding": ("inpaint_full_res_padding", int),
    "Hires upscale": ("hr_scale", float),
    "Hires steps": ("hr_second_pass_steps", int),
    "Hires upscaler": ("hr_upscaler", str),
    "Hires resize-1": ("hr_resize_x", int),
    "Hires resize-2": ("hr_resize_y", int),
    "Hires sampler": ("hr_sampler_name", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Hires CFG Scale": ("hr_cfg", float),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
    "Hires checkpoint": ("hr_checkpoint_name", str),
    "Refiner": ("refiner_checkpoint", str),
    "Refiner switch at": ("refiner_switch_at", float),
}

# Infotext key -> settings option, pasted into override_settings (A1111 infotext_to_setting_name_mapping).
_SETTING_MAP: dict[str, tuple[str, Any]] = {
    "Clip skip": ("CLIP_stop_at_last_layers", int),
    "ENSD": ("eta_noise_seed_delta", int),
    "Token merging ratio": ("token_merging_ratio", float),
    "Token merging ratio hr": ("token_merging_ratio_hr", float),
    "Step cache interval": ("step_cache_interval", int),
    "Hires refiner": ("hires_fix_refiner_pass", str),
    "Refiner switch by sampling steps": ("refiner_switch_by_sample_steps", lambda value: str(value) == "True"),
}
# "RNG" is not pasted: sdstudio draws initial noise on the CPU generator whatever it says.
# "Lora hashes" and "TI hashes" are not pasted either: they identify files, the prompt names them.

_HIRES_FIELDS = {
    "hr_scale",
    "hr_second_pass_steps",
    "hr_upscaler",
    "hr_resize_x",
    "hr_resize_y",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_cfg",
    "hr_prompt",
    "hr_negative_prompt",
    "hr_checkpoint_name",
}
_IMG2IMG_FIELDS = {"mask_blur", "inpaint_full_res_padding", "initial_noise_multiplier"}


def request_fields_from_parameters(params: dict[str, Any], kind: str = "txt2img") -> dict[str, Any]:
    """Request fields (txt2img or img2img) from parsed infotext, as A1111's paste does."""
    fields: dict[str, Any] = {}
    for key, (name, convert) in _FIELD_MAP.items():
        if key not in params:
            continue
        if kind == "txt2img" and name in _IMG2IMG_FIELDS or kind != "txt2img" and name in _HIRES_FIELDS:
            continue
        try:
            fields[name] = convert(float(params[key])) if convert is int else convert(params[key])
        except (TypeError, ValueError):
            continue
    if kind == "txt2img":
        hires = "Denoising strength" in params and any(
            k in params for k in ("Hires upscale", "Hires upscaler", "Hires resize-1")
        )
        fields["enable_hr"] = hires
        if not hires:
            fields.pop("denoising_strength", None)
        if fields.get("hr_resize_x") == 0 and fields.get("hr_resize_y") == 0:
            fields.pop("hr_resize_x"), fields.pop("hr_resize_y")
    if "Face restoration" in params:
        fields["restore_faces"] = True
    if params.get("Tiling") in ("True", True):
        fields["tiling"] = True
    overrides: dict[str, Any] = {}
    for key, (option, convert) in _SETTING_MAP.items():
        if key in params:
            try:
                overrides[option] = convert(params[key])
            except (TypeError, ValueError):
                continue
    if overrides.get("CLIP_stop_at_last_layers") == 1:
        overrides.pop("CLIP_stop_at_last_layers")
    if overrides:
        fields["override_settings"] = overrides
    return fields


def request_fields_from_infotext(text: str, kind: str = "txt2img") -> dict[str, Any]:
    """Parse infotext straight into request fields."""
    return request_fields_from_parameters(parse_generation_parameters(text), kind)
