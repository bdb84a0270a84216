"""sd-webui-controlnet's API: /controlnet/version, model_list, module_list, settings, control_types, detect."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from sdstudio.engine.request import decode_image
from sdstudio.errors import InvalidRequest
from sdstudio.extensions.controlnet import preprocessors
from sdstudio.extensions.controlnet.units import DEFAULT_PROCESSOR_RES, UNIT_COUNT
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep
from sdstudio.server.images import encode_image_base64

router = APIRouter()

API_VERSION = 2
"""sd-webui-controlnet's external_code.get_api_version()."""

CONTROL_TYPES: dict[str, tuple[str, ...]] = {
    "All": (),
    "Canny": ("canny",),
    "Depth": ("depth",),
    "NormalMap": ("normal",),
    "OpenPose": ("openpose",),
    "MLSD": ("mlsd",),
    "Lineart": ("lineart",),
    "SoftEdge": ("softedge", "hed", "pidi"),
    "Scribble/Sketch": ("scribble",),
    "Segmentation": ("seg",),
    "Shuffle": ("shuffle",),
    "Tile/Blur": ("tile", "blur"),
    "Inpaint": ("inpaint",),
    "InstructP2P": ("ip2p",),
    "Reference": ("reference",),
    "Recolor": ("recolor",),
    "T2I-Adapter": ("t2ia",),
    "IP-Adapter": ("ip-adapter", "ip_adapter"),
}
"""sd-webui-controlnet's control types -> the words that pick their modules and models."""


def _model_titles(app: Any) -> list[str]:
    provider = app.engine.controlnets
    return list(provider.titles()) if provider is not None else []


@router.get("/controlnet/version")
def version() -> dict[str, int]:
    """The API version sd-webui-controlnet clients check."""
    return {"version": API_VERSION}


@router.get("/controlnet/model_list")
def model_list(app: AppDep, update: bool = True) -> dict[str, list[str]]:
    """The ControlNet models a unit may name ("<stem> [<hash>]")."""
    return {"model_list": _model_titles(app)}


@router.get("/controlnet/module_list")
def module_list(app: AppDep, alias_names: bool = False) -> dict[str, Any]:
    """The preprocessors (sd-webui-controlnet's names) and each one's sliders."""
    return preprocessors.module_detail(app.paths.root)  # {"module_list": [...], "module_detail": {...}}


@router.get("/controlnet/settings")
def settings() -> dict[str, int]:
    """How many units the UI shows."""
    return {"control_net_unit_count": UNIT_COUNT}


@router.get("/controlnet/control_types")
def control_types(app: AppDep) -> dict[str, Any]:
    """Per control type, its preprocessors and models and the defaults the UI picks."""
    modules = preprocessors.module_list(app.paths.root)
    models = _model_titles(app)
    types = {}
    for name, words in CONTROL_TYPES.items():
        chosen_modules = [m for m in modules if not words or any(w in m.lower() for w in words)]
        chosen_models = [m for m in models if not words or any(w in m.lower() for w in words)]
        if words and "none" not in chosen_modules:
            chosen_modules = ["none", *chosen_modules]
        types[name] = {
            "module_list": chosen_modules,
            "model_list": ["None", *chosen_models],
            "default_option": next((m for m in chosen_modules if m != "none"), "none"),
            "default_model": chosen_models[0] if words and chosen_models else "None",
        }
    return {"control_types": types}


class DetectRequest(m.RequestBody):
    """sd-webui-controlnet's /controlnet/detect body (-1: the module's default)."""

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_processor_res: int = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[str] = Field(default_factory=list)
    low_vram: bool = False


@router.post("/controlnet/detect")
def detect(app: AppDep, body: DetectRequest) -> dict[str, Any]:
    """Run a preprocessor on the images: {"images": [base64 maps], "info": "Success"}."""
    module = body.controlnet_module
    if module not in preprocessors.module_list(app.paths.root):
        raise InvalidRequest("controlnet_module", f"preprocessor {module!r} is not available")
    if not body.controlnet_input_images:
        raise InvalidRequest("controlnet_input_images", "no image given: send at least one (base64)")
    preprocessor = preprocessors.PREPROCESSORS.get(module)
    sliders = preprocessor.sliders if preprocessor is not None else ()
    resolution = body.controlnet_processor_res
    if resolution <= 0:
        resolution = int(sliders[0].value) if sliders else DEFAULT_PROCESSOR_RES
    thresholds = [v if v >= 0 else None for v in (body.controlnet_threshold_a, body.controlnet_threshold_b)]
    images = []
    for index, encoded in enumerate(body.controlnet_input_images):
        image = decode_image(encoded, f"controlnet_input_images[{index}]").convert("RGB")
        detected = preprocessors.run_preprocessor(module, image, resolution, *thresholds)
        images.append(encode_image_base64(detected))
    return {"images": images, "info": "Success"}
