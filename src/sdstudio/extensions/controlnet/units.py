"""ControlNet units as sd-webui-controlnet's API takes them: fields, defaults, legacy names, validation.

A unit is a dict (webuiapi's `ControlNetUnit.to_dict()`, sd-webui-controlnet's
`external_code.ControlNetUnit`) or the positional form of older clients (the fields in
`POSITIONAL_FIELDS` order). Missing fields take sd-webui-controlnet's defaults; older
names (`input_image`, `mask_image`, `lowvram`, `guidance`, `guessmode`) and integer
`resize_mode`/`control_mode` are accepted. Errors name the unit and field:
`controlnet[0].weight`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sdstudio.engine.request import decode_image
from sdstudio.errors import InvalidRequest

UNIT_COUNT = 3
"""Units the UI shows (sd-webui-controlnet's control_net_unit_count default); the API takes more."""
DEFAULT_PROCESSOR_RES = 512
"""The processor resolution of a module without a resolution slider."""


class ResizeMode(StrEnum):
    """How the control image is fitted to the generated size (sd-webui-controlnet's names; legacy ints 0-2)."""

    JUST_RESIZE = "Just Resize"
    CROP_AND_RESIZE = "Crop and Resize"
    RESIZE_AND_FILL = "Resize and Fill"


class ControlMode(StrEnum):
    """How the control weighs against the prompt (sd-webui-controlnet's names; legacy ints 0-2)."""

    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


RESIZE_MODE_NAMES: dict[Any, ResizeMode] = {
    0: ResizeMode.JUST_RESIZE,
    1: ResizeMode.CROP_AND_RESIZE,
    2: ResizeMode.RESIZE_AND_FILL,
    "Inner Fit (Scale to Fit)": ResizeMode.CROP_AND_RESIZE,
    "Scale to Fit (Inner Fit)": ResizeMode.CROP_AND_RESIZE,
    "Outer Fit (Shrink to Fit)": ResizeMode.RESIZE_AND_FILL,
    "Envelope (Outer Fit)": ResizeMode.RESIZE_AND_FILL,
}
"""Legacy values of resize_mode (integers, older names) and what they mean now."""

CONTROL_MODE_NAMES: dict[Any, ControlMode] = {0: ControlMode.BALANCED, 1: ControlMode.PROMPT, 2: ControlMode.CONTROL}
"""Legacy integer values of control_mode."""

LEGACY_FIELDS = {"input_image": "image", "mask_image": "mask", "lowvram": "low_vram", "guidance": "guidance_end"}
"""Older field names sd-webui-controlnet still accepts, and the field each is now."""

POSITIONAL_FIELDS = (
    "enabled",
    "module",
    "model",
    "weight",
    "image",
    "resize_mode",
    "low_vram",
    "processor_res",
    "threshold_a",
    "threshold_b",
    "guidance_start",
    "guidance_end",
    "pixel_perfect",
    "control_mode",
)
"""The order of a unit given as a list (sd-webui-controlnet's positional unit)."""


class ControlNetUnit(BaseModel):
    """One ControlNet unit, with sd-webui-controlnet's defaults (-1 = the preprocessor's default)."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    enabled: bool = True  # external_code's dataclass default: an API unit runs unless switched off
    module: str = "none"
    model: str = "None"
    weight: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    image: Any = None
    mask: Any = None
    resize_mode: ResizeMode = ResizeMode.CROP_AND_RESIZE
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    guidance_end: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    pixel_perfect: bool = False
    control_mode: ControlMode = ControlMode.BALANCED
    save_detected_map: bool = True

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        for old, new in LEGACY_FIELDS.items():
            if old in values:
                if values.get(new) is not None and values[old] is not None:
                    raise ValueError(f"give either {old!r} or {new!r}, not both")
                value = values.pop(old)
                if value is not None:
                    values[new] = value
        if "guessmode" in values:
            guess = values.pop("guessmode")
            values.setdefault("control_mode", ControlMode.CONTROL if guess else ControlMode.BALANCED)
        return values

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _resize_mode(cls, value: Any) -> Any:
        return RESIZE_MODE_NAMES.get(value, value) if isinstance(value, (int, str)) else value

    @field_validator("control_mode", mode="before")
    @classmethod
    def _control_mode(cls, value: Any) -> Any:
        return CONTROL_MODE_NAMES.get(value, value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _guidance_order(self) -> ControlNetUnit:
        if self.guidance_start > self.guidance_end:
            raise ValueError(f"guidance_start ({self.guidance_start}) is after guidance_end ({self.guidance_end})")
        return self

    def images(self, field_name: str) -> tuple[Image.Image, Image.Image | None]:
        """(control image RGB, mask or None) from `image` (base64, {"image", "mask"}, [image, mask]) and `mask`."""
        image: Any = self.image
        mask: Any = self.mask
        if isinstance(image, dict):
            image, mask = image.get("image"), image.get("mask", mask)
        elif isinstance(image, (list, tuple)):
            if len(image) != 2:
                raise InvalidRequest(f"{field_name}.image", "a list image must be [image, mask]")
            image, mask = image
        if image is None or (isinstance(image, str) and not image.strip()):
            raise InvalidRequest(f"{field_name}.image", "this enabled unit has no image: send one (base64)")
        decoded = decode_image(image, f"{field_name}.image").convert("RGB")
        decoded_mask = decode_image(mask, f"{field_name}.mask").convert("L") if mask else None
        return decoded, decoded_mask

    def infotext(self) -> str:
        """The unit as sd-webui-controlnet writes it in the infotext (the value of `ControlNet N`)."""
        values = {
            "Module": self.module,
            "Model": self.model,
            "Weight": self.weight,
            "Resize Mode": self.resize_mode.value,
            "Processor Res": self.processor_res,
            "Threshold A": self.threshold_a,
            "Threshold B": self.threshold_b,
            "Guidance Start": self.guidance_start,
            "Guidance End": self.guidance_end,
            "Pixel Perfect": self.pixel_perfect,
            "Control Mode": self.control_mode.value,
        }
        return ", ".join(f"{key}: {value}" for key, value in values.items())


def parse_unit(value: Any, index: int, field_prefix: str = "controlnet") -> ControlNetUnit | None:
    """One unit from a request (dict, positional list, or a unit); None for an empty slot."""
    field_name = f"{field_prefix}[{index}]"
    if value is None or value == {}:
        return None
    if isinstance(value, ControlNetUnit):
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > len(POSITIONAL_FIELDS):
            raise InvalidRequest(field_name, f"a positional unit has at most {len(POSITIONAL_FIELDS)} fields")
        value = dict(zip(POSITIONAL_FIELDS, value, strict=False))
    if not isinstance(value, dict):
        raise InvalidRequest(field_name, f"a unit must be an object of ControlNet fields, got {type(value).__name__}")
    try:
        return ControlNetUnit.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        raise InvalidRequest(f"{field_name}.{location}" if location else field_name, error["msg"]) from None


def parse_units(values: list[Any], field_prefix: str = "controlnet") -> list[tuple[int, ControlNetUnit]]:
    """The enabled units of a request with their indexes; InvalidRequest naming `controlnet[i].field`."""
    units = [(index, parse_unit(value, index, field_prefix)) for index, value in enumerate(values)]
    return [(index, unit) for index, unit in units if unit is not None and unit.enabled]
