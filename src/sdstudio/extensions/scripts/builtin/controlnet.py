"""ControlNet (sd-webui-controlnet's always-on script): units steer each UNet call with a control image.

Each enabled unit's image is preprocessed once per job (its module), fitted to the size
being generated (its resize mode; the hires pass gets the map at its own size) and fed to
the unit's ControlNet at every guided UNet call whose progress lies in
[guidance_start, guidance_end); the ControlNet's residuals, times the unit's weight, are
added to the UNet's (several units add up). Control modes follow sd-webui-controlnet:
"My prompt is more important" scales the residuals down layer by layer (0.825 per layer
from the middle block outwards), "ControlNet is more important" does that too and applies
the control to the conditional rows only. The infotext records each unit as
`ControlNet N: "Module: ..., Model: ..., ..."`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdstudio.engine.sampling import merge_unet_kwargs
from sdstudio.engine.scripting import UNetCallParams
from sdstudio.errors import InvalidRequest, NotFound
from sdstudio.extensions.controlnet.preprocessors import (
    PREPROCESSORS,
    RESOLUTION,
    find_preprocessor,
    run_preprocessor,
)
from sdstudio.extensions.controlnet.units import (
    DEFAULT_PROCESSOR_RES,
    UNIT_COUNT,
    ControlMode,
    ControlNetUnit,
    ResizeMode,
    parse_units,
)
from sdstudio.extensions.scripts import AlwaysVisible, Control, Script, StableDiffusionProcessing

SOFT_INJECTION_BASE = 0.825
"""Per-layer fall-off of the residuals when the control is not balanced (sd-webui-controlnet's)."""


def fit_image(image: Image.Image, width: int, height: int, mode: ResizeMode) -> Image.Image:
    """`image` made width x height: stretched, covering then centre-cropped, or fitted then padded with black."""
    if mode is ResizeMode.JUST_RESIZE:
        return image.resize((width, height), Image.Resampling.LANCZOS)
    ratio_w, ratio_h = width / image.width, height / image.height
    scale = max(ratio_w, ratio_h) if mode is ResizeMode.CROP_AND_RESIZE else min(ratio_w, ratio_h)
    scaled = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    canvas = Image.new("RGB", (width, height))
    canvas.paste(scaled, ((width - scaled.width) // 2, (height - scaled.height) // 2))
    return canvas


def pixel_perfect_resolution(image: Image.Image, width: int, height: int, mode: ResizeMode) -> int:
    """The processor resolution that maps the image's pixels one to one onto the target (sd-webui-controlnet)."""
    ratio_w, ratio_h = width / image.width, height / image.height
    ratio = min(ratio_w, ratio_h) if mode is ResizeMode.RESIZE_AND_FILL else max(ratio_w, ratio_h)
    return max(1, round(ratio * min(image.width, image.height)))


def resolved(unit: ControlNetUnit, image: Image.Image, width: int, height: int) -> ControlNetUnit:
    """`unit` with -1 (or out-of-range) processor resolution and thresholds replaced by the module's defaults."""
    sliders = find_preprocessor(unit.module).sliders
    resolution = next((spec for spec in sliders if spec.name == RESOLUTION.name), None)
    thresholds = [spec for spec in sliders if spec is not resolution]
    changes: dict[str, Any] = {}
    if unit.pixel_perfect:
        changes["processor_res"] = pixel_perfect_resolution(image, width, height, unit.resize_mode)
    elif resolution is not None and not resolution.minimum <= unit.processor_res <= resolution.maximum:
        changes["processor_res"] = int(resolution.value)
    elif unit.processor_res < 0:
        changes["processor_res"] = DEFAULT_PROCESSOR_RES
    for name, spec in zip(("threshold_a", "threshold_b"), thresholds, strict=False):
        if not spec.minimum <= getattr(unit, name) <= spec.maximum:
            changes[name] = float(spec.value)
    return unit.model_copy(update=changes)


@dataclass
class PreparedUnit:
    """An enabled unit ready for the UNet calls: its control map, model and the map at each size asked."""

    index: int
    unit: ControlNetUnit
    detected: Image.Image
    model: torch.nn.Module
    hints: dict[tuple[int, int, str], torch.Tensor] = field(default_factory=dict)

    def hint(self, width: int, height: int, like: torch.Tensor) -> torch.Tensor:
        """The control map fitted to width x height as a [1, 3, H, W] tensor in [0, 1]."""
        key = (width, height, str(like.device))
        if key not in self.hints:
            fitted = fit_image(self.detected.convert("RGB"), width, height, self.unit.resize_mode)
            array = np.asarray(fitted, dtype=np.float32) / 255.0
            self.hints[key] = torch.from_numpy(array).permute(2, 0, 1)[None].to(like.device)
        return self.hints[key]

    def active(self, step: int, total_steps: int) -> bool:
        """Whether this sampling step's progress lies in [guidance_start, guidance_end)."""
        progress = step / max(total_steps, 1)
        return self.unit.weight > 0 and self.unit.guidance_start <= progress < self.unit.guidance_end

    def residuals(self, params: UNetCallParams) -> dict[str, Any]:
        """This unit's ControlNet residuals for the batched call, weighted per its control mode."""
        model, x_in = self.model, params.x_in
        config: Any = model.config  # diffusers' ControlNetModel config
        dtype = next(model.parameters()).dtype
        if next(model.parameters()).device != x_in.device:
            model.to(x_in.device)
        scale = 2 ** (len(config.conditioning_embedding_out_channels) - 1)
        hint = self.hint(x_in.shape[3] * scale, x_in.shape[2] * scale, x_in)
        sample = x_in[:, : config.in_channels].to(dtype)
        added = {key: params.unet_kwargs[key] for key in ("added_cond_kwargs",) if key in params.unet_kwargs}
        down, mid = model(
            sample,
            params.t_in.to(torch.float32),
            encoder_hidden_states=params.text.to(dtype),
            controlnet_cond=hint.to(dtype).expand(x_in.shape[0], -1, -1, -1),
            return_dict=False,
            **added,
        )
        layers = [*down, mid]
        weights = [self.unit.weight] * len(layers)
        if self.unit.control_mode is not ControlMode.BALANCED:  # soft injection: deep layers keep more
            weights = [self.unit.weight * SOFT_INJECTION_BASE ** (len(down) - i) for i in range(len(layers))]
        rows = torch.ones(x_in.shape[0], 1, 1, 1, device=x_in.device, dtype=dtype)
        if self.unit.control_mode is ControlMode.CONTROL:  # the unconditional rows go without the control
            rows[-params.batch :] = 0
        scaled = [layer * (weight * rows) for layer, weight in zip(layers, weights, strict=True)]
        return {"down_block_additional_residuals": tuple(scaled[:-1]), "mid_block_additional_residual": scaled[-1]}


class ControlNetScript(Script):
    """sd-webui-controlnet's always-on script: `alwayson_scripts.controlnet.args` are its units."""

    def title(self) -> str:
        return "ControlNet"

    def show(self, is_img2img: bool) -> Any:
        return AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Control]:
        return [Control(label=f"ControlNet Unit {i}", value=None) for i in range(UNIT_COUNT)]

    def process(self, p: StableDiffusionProcessing, *units: Any) -> None:
        prepared = [self._prepare(p, index, unit) for index, unit in parse_units(list(units))]
        p.controlnet_units = prepared  # type: ignore[attr-defined]  # this job's, read by unet_kwargs
        for unit in prepared:
            p.extra_generation_params[f"ControlNet {unit.index}"] = unit.unit.infotext()

    def _prepare(self, p: StableDiffusionProcessing, index: int, unit: ControlNetUnit) -> PreparedUnit:
        field_name = f"controlnet[{index}]"
        try:
            find_preprocessor(unit.module)  # sd-webui-controlnet's other spellings too
        except NotFound:
            known = ", ".join(PREPROCESSORS)
            raise InvalidRequest(
                f"{field_name}.module", f"preprocessor {unit.module!r} is not available; known: {known}"
            ) from None
        init_images = getattr(p, "init_images", None)
        if unit.image is None and p.is_img2img and init_images:
            unit = unit.model_copy(update={"image": init_images[0]})  # sd-webui-controlnet: the img2img image
        image, mask = unit.images(field_name)
        unit = resolved(unit, image, p.width, p.height)
        thresholds = [v if v >= 0 else None for v in (unit.threshold_a, unit.threshold_b)]
        seed = p.seed if isinstance(p.seed, int) and p.seed >= 0 else None  # shuffle follows the job's seed
        detected = run_preprocessor(unit.module, image, unit.processor_res, *thresholds, mask=mask, seed=seed)
        model = self._model(p, field_name, unit.model)
        provider = p.services.controlnets if p.services is not None else None
        if provider is not None:  # the infotext names the file as found ("canny" -> "control_canny [a1b2c3d4]")
            unit = unit.model_copy(update={"model": provider.title(unit.model)})
        return PreparedUnit(index, unit, detected, model)

    def _model(self, p: StableDiffusionProcessing, field_name: str, name: str) -> torch.nn.Module:
        provider = p.services.controlnets if p.services is not None else None
        if provider is None or name in ("", "None"):
            raise InvalidRequest(f"{field_name}.model", f"ControlNet model {name!r} is not available")
        try:
            return provider.load(name)
        except NotFound as exc:
            raise InvalidRequest(f"{field_name}.model", str(exc)) from None

    def unet_kwargs(self, p: StableDiffusionProcessing, params: UNetCallParams, *units: Any) -> dict[str, Any] | None:
        prepared: list[PreparedUnit] = getattr(p, "controlnet_units", [])
        added: dict[str, Any] = {}
        for unit in prepared:
            if not unit.active(params.step, params.total_steps):
                continue
            added = merge_unet_kwargs(added, unit.residuals(params))
        return added or None
