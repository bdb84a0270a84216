"""Typed generation requests and results, under A1111's field names and defaults.

Field names and defaults follow A1111's `StableDiffusionProcessing`, `...Txt2Img` and
`...Img2Img` (modules/processing.py). Requests are validated when built: a bad value
raises `InvalidRequest(field, message)` naming the A1111 field, so every front end
reports the same one-line error. Images may be given as PIL images, `pathlib.Path`
objects (the CLI's files) or base64 strings (the API's, with or without a data: prefix);
they are decoded here, at the edge. Plain strings are never treated as paths, so a
request from the network cannot name a file.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Self

from PIL import Image
from pydantic import ConfigDict, field_validator, model_validator

from sdstudio.config import IMAGE_DECODE_LIMIT_MP, IMAGES_PER_JOB_CEILING, STEPS_CEILING, Settings
from sdstudio.engine.samplers import (
    SamplerDef,
    ScheduleType,
    find_schedule_type,
    resolve_sampler_and_schedule,
    sampler_names,
    schedule_type_labels,
)
from sdstudio.errors import InvalidRequest
from sdstudio.postprocess.image_files import decode_client_image
from sdstudio.prompts.parser import PromptTooComplex, check_nesting
from sdstudio.validation import CheckedRequest, between

# Steps and image counts: the limit settings own them (checked by `check_limits` before queueing);
# the fields refuse only past the most those settings may be set to (config's ceilings), so a field's
# bound never refuses what a setting allows, and its error names that setting.
# Width and height have no setting (limit_batch_megapixels bounds the area): 8192 is the largest side
# sdstudio generates at, a bound on the shape of the work whatever the area allowed.
MAX_SIZE = 8192
CFG_RANGE = (0.0, 100.0)

# Value ranges of A1111's sliders (shared_options.py); every float field is also refused when NaN or infinite.
CfgScale = Annotated[float, between(*CFG_RANGE)]
Fraction = Annotated[float, between(0.0, 1.0)]
# Wider than A1111's sliders (its API takes any number): refuse only what cannot make sense.
Eta = Annotated[float, between(0.0, 10.0)]
SigmaChurn = Annotated[float, between(0.0, 1000.0)]
SigmaTmin = Annotated[float, between(0.0, 1000.0)]
SigmaTmax = Annotated[float, between(0.0, 1000.0)]  # 0: no upper limit
SigmaNoise = Annotated[float, between(0.0, 10.0)]
NoiseMultiplier = Annotated[float, between(0.0, 10.0)]
HiresScale = Annotated[float, between(1.0, 8.0)]

HIRES_LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
"""A1111's latent upscale modes (shared.latent_upscale_modes): name -> (interpolate mode, antialias)."""

HIRES_IMAGE_UPSCALERS = ("None", "Lanczos", "Nearest")
"""Built-in pixel upscalers; model upscalers (ESRGAN...) come from an injected registry."""


def hires_upscaler_names(model_upscalers: Iterable[str] = ()) -> list[str]:
    """Every hr_upscaler choice in A1111's order: the latent modes, then None/Lanczos/Nearest and the models."""
    return list(dict.fromkeys([*HIRES_LATENT_UPSCALERS, *HIRES_IMAGE_UPSCALERS, *model_upscalers]))


# What A1111's UI sends for "same as the first pass" (None: the API's default).
SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"
SAME_CHECKPOINT = "Use same checkpoint"  # A1111's hr_checkpoint_name for "the job's checkpoint"
_SAME_SAMPLER = (None, "", SAME_SAMPLER)
_SAME_SCHEDULER = (None, "", SAME_SCHEDULER)


def refiner_checkpoint_name(value: str | None) -> str | None:
    """The refiner a request names; None for A1111's spellings of "no refiner" ("", "None", "none")."""
    return None if value is None or value.strip() in ("", "None", "none") else value


def hires_checkpoint_name(value: str | None) -> str | None:
    """The hires pass's checkpoint a request names; None for "the job's own" ("", "Use same checkpoint")."""
    return None if value is None or value.strip() in ("", SAME_CHECKPOINT) else value


RESIZE_MODES = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill", 3: "Just resize (latent upscale)"}
INPAINTING_FILL = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}


def decode_base64_image(encoded: str, field_name: str, max_megapixels: float = IMAGE_DECODE_LIMIT_MP) -> Image.Image:
    """A PIL image from a base64 string (data-URL prefix accepted); an error naming the field when it is not one.

    Decoded by `decode_client_image`: an image over `max_megapixels` (img_max_decode_mp) is refused.
    """
    if not isinstance(encoded, str) or not encoded.strip():
        raise InvalidRequest(field_name, "expected a base64-encoded image")
    text = encoded.strip()
    if text.startswith(("http://", "https://")):
        raise InvalidRequest(field_name, "image URLs are not fetched (sdstudio works offline); send base64 data")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=False)
    except ValueError as exc:  # binascii.Error
        raise InvalidRequest(field_name, f"not valid base64 ({exc})") from None
    return decode_client_image(data, field_name, max_megapixels)


def decode_image(value: Any, field_name: str, max_megapixels: float = IMAGE_DECODE_LIMIT_MP) -> Image.Image:
    """A PIL image from a PIL image, a Path, bytes or a base64 string; InvalidRequest otherwise."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, str):
        return decode_base64_image(value, field_name, max_megapixels)
    if isinstance(value, (Path, bytes, bytearray)):
        return decode_client_image(value if isinstance(value, Path) else bytes(value), field_name, max_megapixels)
    raise InvalidRequest(field_name, f"expected an image (base64 string or file), got {type(value).__name__}")


def decode_img2img_images(fields: dict[str, Any], max_megapixels: float) -> dict[str, Any]:
    """`fields` with `init_images` and `mask` decoded under the pixel limit (front ends with settings call this).

    Img2ImgRequest decodes what is still undecoded under the default limit.
    """
    decoded = dict(fields)
    if "init_images" in fields:
        decoded["init_images"] = _init_images(fields["init_images"], max_megapixels)
    if "mask" in fields:
        decoded["mask"] = _mask(fields["mask"], max_megapixels)
    return decoded


def _init_images(value: Any, max_megapixels: float) -> list[Image.Image]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [decode_image(v, "init_images", max_megapixels) for v in value]


def _mask(value: Any, max_megapixels: float) -> Image.Image | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return decode_image(value, "mask", max_megapixels)


class _Request(CheckedRequest):
    """Fields common to txt2img and img2img (A1111 StableDiffusionProcessing)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=False)

    prompt: str | list[str] = ""  # a list: one prompt per image (batch_size * n_iter of them)
    negative_prompt: str | list[str] = ""
    styles: list[str] = []
    seed: int = -1
    subseed: int = -1
    subseed_strength: Fraction = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: CfgScale = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool = False
    tiling: bool = False
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: Eta | None = None
    denoising_strength: Fraction = 0.75
    s_churn: SigmaChurn | None = None
    s_tmax: SigmaTmax | None = None
    s_tmin: SigmaTmin | None = None
    s_noise: SigmaNoise | None = None
    override_settings: dict[str, Any] = {}
    override_settings_restore_afterwards: bool = True  # False: the overrides stay in force afterwards (not saved)
    disable_extra_networks: bool = False  # True: <lora:...> tags are removed from the prompt but not applied
    refiner_checkpoint: str | None = None  # A1111's refiner: the checkpoint that takes over part-way
    refiner_switch_at: Fraction | None = None  # ... when this fraction of the denoising is done (None: at once)
    outpath_samples: str | None = None  # overrides the settings' output folder (CLI --outdir)
    outpath_grids: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a plain dict (API body, parsed infotext); unknown keys are an error."""
        return cls(**data)

    @field_validator("width", "height")
    @classmethod
    def _size(cls, value: int) -> int:
        if value % 8 != 0 or value < 8:
            raise ValueError(f"must be a multiple of 8 between 8 and {MAX_SIZE}, got {value}")
        if value > MAX_SIZE:
            raise ValueError(
                f"{value} is over {MAX_SIZE}, the largest side sdstudio generates at "
                "(setting limit_batch_megapixels bounds width × height × batch_size)"
            )
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if not 1 <= value <= STEPS_CEILING:
            raise ValueError(f"must be between 1 and {STEPS_CEILING}, the most setting limit_steps allows, got {value}")
        return value

    @field_validator("batch_size", "n_iter")
    @classmethod
    def _image_count(cls, value: int) -> int:
        if not 1 <= value <= IMAGES_PER_JOB_CEILING:
            raise ValueError(
                f"must be between 1 and {IMAGES_PER_JOB_CEILING}, the most setting limit_images_per_job allows, "
                f"got {value}"
            )
        return value

    @field_validator("seed_resize_from_w", "seed_resize_from_h")
    @classmethod
    def _seed_resize(cls, value: int) -> int:
        # A1111's slider: 0 (off) or a size in steps of 8; -1 is the API's "off".
        if not (value in (-1, 0) or 8 <= value <= MAX_SIZE):
            raise ValueError(f"must be -1 or 0 (off) or between 8 and {MAX_SIZE}, got {value}")
        return value

    @field_validator("refiner_checkpoint")
    @classmethod
    def _refiner(cls, value: str | None) -> str | None:
        return refiner_checkpoint_name(value)

    @field_validator("seed", "subseed")
    @classmethod
    def _seed(cls, value: int) -> int:
        if value < -1 or value > 2**32 - 1:
            raise ValueError(f"must be -1 (random) or between 0 and {2**32 - 1}, got {value}")
        return value

    @model_validator(mode="after")
    def _sampler(self) -> Self:
        resolved = resolve_sampler_and_schedule(self.sampler_name, self.scheduler)
        if resolved is None:
            if find_schedule_type(self.scheduler) is None:
                raise InvalidRequest(
                    "scheduler", f"unknown schedule type {self.scheduler!r}; known: {', '.join(schedule_type_labels())}"
                )
            raise InvalidRequest(
                "sampler_name", f"unknown sampler {self.sampler_name!r}; known: {', '.join(sampler_names())}"
            )
        sampler, schedule = resolved
        # Normalise old combined names ("DPM++ 2M Karras") to A1111 1.9+ sampler + schedule type.
        object.__setattr__(self, "sampler_name", sampler.name)
        object.__setattr__(self, "scheduler", schedule.label)
        return self

    @model_validator(mode="after")
    def _total_images(self) -> Self:
        if self.total_images > IMAGES_PER_JOB_CEILING:
            raise InvalidRequest(
                "n_iter",
                f"batch_size × n_iter = {self.batch_size} × {self.n_iter} = {self.total_images} images is over "
                f"{IMAGES_PER_JOB_CEILING}, the most setting limit_images_per_job allows",
            )
        return self

    @model_validator(mode="after")
    def _prompt_lists(self) -> Self:
        for name in ("prompt", "negative_prompt"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != self.total_images:
                raise InvalidRequest(
                    name,
                    f"a list of prompts needs one per image: batch_size * n_iter = {self.total_images}, "
                    f"got {len(value)}",
                )
        return self

    @property
    def total_images(self) -> int:
        return self.batch_size * self.n_iter

    def all_prompts(self) -> list[str]:
        """One prompt per image (A1111 `all_prompts`): the list as given, or the one prompt repeated."""
        return list(self.prompt) if isinstance(self.prompt, list) else [self.prompt] * self.total_images

    def all_negative_prompts(self) -> list[str]:
        """One negative prompt per image, as `all_prompts`."""
        negative = self.negative_prompt
        return list(negative) if isinstance(negative, list) else [negative] * self.total_images

    def prompt_fields(self) -> dict[str, list[str]]:
        """Every prompt text of the request by field name (a list field gives all its prompts)."""
        return {
            name: list(value) if isinstance(value, list) else [value]
            for name in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
            if isinstance(value := getattr(self, name, None), (str, list))
        }

    def check_prompts(self, max_length: int) -> None:
        """Refuse a prompt longer than `max_length` (the `prompt_max_length` setting) or nested too deep.

        Cheap (one pass over each text), so front ends call it before queueing; the error
        names the field. Within these bounds the prompt parser's work is linear in the length.
        """
        for name, texts in self.prompt_fields().items():
            for text in texts:
                if len(text) > max_length:
                    raise InvalidRequest(
                        name,
                        f"is {len(text)} characters long; at most {max_length} are accepted "
                        "(setting prompt_max_length)",
                    )
                try:
                    check_nesting(text)
                except PromptTooComplex as exc:
                    raise InvalidRequest(name, str(exc)) from None


class Txt2ImgRequest(_Request):
    """A text-to-image request (A1111 StableDiffusionProcessingTxt2Img)."""

    enable_hr: bool = False
    hr_scale: HiresScale = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None  # the hires pass on another checkpoint (None: the job's)
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_cfg: CfgScale | None = None

    @field_validator("hr_second_pass_steps")
    @classmethod
    def _hr_steps(cls, value: int) -> int:
        if not 0 <= value <= STEPS_CEILING:
            raise ValueError(
                f"must be between 0 (same as steps) and {STEPS_CEILING}, the most setting limit_steps allows, "
                f"got {value}"
            )
        return value

    @field_validator("hr_resize_x", "hr_resize_y")
    @classmethod
    def _hr_resize(cls, value: int) -> int:
        if value != 0 and (value % 8 != 0 or not 8 <= value <= MAX_SIZE):
            raise ValueError(f"must be 0 (use hr_scale) or a multiple of 8 up to {MAX_SIZE}, got {value}")
        return value

    @model_validator(mode="after")
    def _hr_sampler(self) -> Self:
        if self.hr_scheduler not in _SAME_SCHEDULER and find_schedule_type(self.hr_scheduler) is None:
            raise InvalidRequest(
                "hr_scheduler",
                f"unknown schedule type {self.hr_scheduler!r}; known: {', '.join(schedule_type_labels())}",
            )
        if (
            self.hr_sampler_name not in _SAME_SAMPLER
            and resolve_sampler_and_schedule(self.hr_sampler_name or "", None) is None
        ):
            raise InvalidRequest(
                "hr_sampler_name", f"unknown sampler {self.hr_sampler_name!r}; known: {', '.join(sampler_names())}"
            )
        if not self.hr_upscaler:
            object.__setattr__(self, "hr_upscaler", "Latent")
        return self

    @field_validator("hr_checkpoint_name")
    @classmethod
    def _hires_checkpoint(cls, value: str | None) -> str | None:
        return hires_checkpoint_name(value)

    def hires_sampler_and_schedule(self) -> tuple[SamplerDef, ScheduleType]:
        """The hires pass's sampler and schedule type: the first pass's unless hr_sampler_name/hr_scheduler differ."""
        sampler = self.sampler_name if self.hr_sampler_name in _SAME_SAMPLER else self.hr_sampler_name
        scheduler = self.scheduler if self.hr_scheduler in _SAME_SCHEDULER else self.hr_scheduler
        resolved = resolve_sampler_and_schedule(sampler or self.sampler_name, scheduler)
        assert resolved is not None  # the validators checked both names
        return resolved

    def hires_size(self) -> tuple[int, int]:
        """Target (width, height) of the hires pass (A1111 Txt2Img.init hr sizing)."""
        if self.hr_resize_x == 0 and self.hr_resize_y == 0:
            return int(self.width * self.hr_scale) // 8 * 8, int(self.height * self.hr_scale) // 8 * 8
        if self.hr_resize_y == 0:
            return self.hr_resize_x, self.hr_resize_x * self.height // self.width // 8 * 8
        if self.hr_resize_x == 0:
            return self.hr_resize_y * self.width // self.height // 8 * 8, self.hr_resize_y
        return self.hr_resize_x, self.hr_resize_y


class Img2ImgRequest(_Request):
    """An image-to-image / inpainting request (A1111 StableDiffusionProcessingImg2Img)."""

    init_images: list[Any] = []
    resize_mode: int = 0
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: NoiseMultiplier | None = None

    @field_validator("init_images", mode="before")
    @classmethod
    def _init_images(cls, value: Any) -> list[Image.Image]:
        return _init_images(value, IMAGE_DECODE_LIMIT_MP)

    @field_validator("mask", mode="before")
    @classmethod
    def _mask(cls, value: Any) -> Image.Image | None:
        return _mask(value, IMAGE_DECODE_LIMIT_MP)

    @field_validator("resize_mode")
    @classmethod
    def _resize_mode(cls, value: int) -> int:
        if value not in RESIZE_MODES:
            raise ValueError(f"must be one of {', '.join(f'{k} ({v})' for k, v in RESIZE_MODES.items())}, got {value}")
        return value

    @field_validator("inpainting_fill")
    @classmethod
    def _fill(cls, value: int) -> int:
        if value not in INPAINTING_FILL:
            raise ValueError(
                f"must be one of {', '.join(f'{k} ({v})' for k, v in INPAINTING_FILL.items())}, got {value}"
            )
        return value

    @field_validator("mask_blur", "mask_blur_x", "mask_blur_y", "inpaint_full_res_padding")
    @classmethod
    def _non_negative(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 256:
            raise ValueError(f"must be between 0 and 256, got {value}")
        return value

    @model_validator(mode="after")
    def _images_present(self) -> Self:
        if not self.init_images:
            raise InvalidRequest("init_images", "img2img needs at least one init image")
        if self.mask_blur is not None:
            # A1111: a given mask_blur sets both directions.
            object.__setattr__(self, "mask_blur_x", self.mask_blur)
            object.__setattr__(self, "mask_blur_y", self.mask_blur)
        return self


@dataclass
class GenerationResult:
    """What a generation job produced (A1111 Processed, trimmed to what front ends use).

    `images` holds the grid first when one was made and `return_grid` is on, like A1111;
    `index_of_first_image` says where the individual images start. The per-image lists
    (seeds, subseeds, prompts, infotexts, saved_paths) describe `images[index_of_first_image:]`
    only; `info["infotexts"]` is A1111's list with the grid's infotext first.
    """

    images: list[Image.Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    saved_paths: list[Path] = field(default_factory=list)
    grid_path: Path | None = None
    grid_infotext: str | None = None
    index_of_first_image: int = 0
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def js(self) -> dict[str, Any]:
        """A1111's `info` JSON object (Processed.js) as a dict."""
        return dict(self.info)


def check_limits(request: Txt2ImgRequest | Img2ImgRequest, settings: Settings) -> None:
    """Refuse a request over the settings' limits (steps, images per job, megapixels per batch); 0 = no limit.

    Front ends call this before queueing, so work too large for the machine is a 4xx at once
    rather than hours of work or an allocator error. The error names the field to change.
    """
    steps_limit = settings.limit_steps
    steps = {"steps": request.steps}
    if isinstance(request, Txt2ImgRequest) and request.enable_hr:
        steps["hr_second_pass_steps"] = request.hr_second_pass_steps
    for name, value in steps.items():
        if steps_limit and value > steps_limit:
            raise InvalidRequest(name, f"{value} steps is over the limit of {steps_limit} (setting limit_steps)")
    images_limit = settings.limit_images_per_job
    if images_limit and request.total_images > images_limit:
        raise InvalidRequest(
            "batch_size" if request.batch_size > images_limit else "n_iter",
            f"batch_size × n_iter = {request.batch_size} × {request.n_iter} = {request.total_images} images "
            f"is over the limit of {images_limit} per request (setting limit_images_per_job)",
        )
    megapixels_limit = settings.limit_batch_megapixels
    if not megapixels_limit:
        return
    for name, (width, height) in _pass_sizes(request).items():
        one_image = width * height / 1e6
        batch = one_image * request.batch_size
        if batch > megapixels_limit:
            raise InvalidRequest(
                name if one_image > megapixels_limit else "batch_size",
                f"{width}×{height} × batch_size {request.batch_size} = {batch:.1f} megapixels per batch is over "
                f"the limit of {megapixels_limit:g} (setting limit_batch_megapixels)",
            )


def _pass_sizes(request: Txt2ImgRequest | Img2ImgRequest) -> dict[str, tuple[int, int]]:
    """Each pass's image size, by the field that sets it."""
    sizes = {"width": (request.width, request.height)}
    if isinstance(request, Txt2ImgRequest) and request.enable_hr:
        hires_field = "hr_resize_x" if request.hr_resize_x else "hr_resize_y" if request.hr_resize_y else "hr_scale"
        sizes[hires_field] = request.hires_size()
    return sizes
