"""Architecture detection from a checkpoint's keys and shapes, as a table of probes.

Each probe looks at the state dict and answers whether it is its architecture (like
ComfyUI's model detection and diffusers' single-file key checks); the first match wins,
so more specific rows come first. A `NAME.yaml` beside the checkpoint overrides the
guess: its LDM config is used as it is (this is also how non-standard sizes, such as
the bundled tiny model, describe themselves).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sdstudio.errors import ModelLoadError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_PREFIX = "conditioner.embedders."


@dataclass(frozen=True)
class Architecture:
    """A model family the loader knows: its name, config and conditioning."""

    name: str  # "SD1", "SD1-inpaint", "SD2", "SD2-v", "SD2-inpaint", "SDXL", "SDXL-refiner"
    family: str  # "sd1" | "sd2" | "sdxl" | "sdxl_refiner": which text conditioning applies
    config_name: str  # shipped LDM yaml in sdstudio/assets/configs
    prediction_type: str = "epsilon"
    inpainting: bool = False


# A probe answers whether a state dict is of its architecture.
_Probe = Callable[[Mapping[str, Any]], bool]


def _conv_in_channels(sd: Mapping[str, Any]) -> int:
    weight = sd.get(UNET_PREFIX + "input_blocks.0.0.weight")
    return int(weight.shape[1]) if weight is not None else 4


def _has(prefix: str) -> _Probe:
    return lambda sd: any(k.startswith(prefix) for k in sd)


_is_sdxl_base = _has(SDXL_PREFIX + "1.model.transformer.")
_is_sdxl_refiner: _Probe = lambda sd: _has(SDXL_PREFIX + "0.model.transformer.")(sd) and not _is_sdxl_base(sd)  # noqa: E731
_is_sd2 = _has(SD2_TEXT_PREFIX + "transformer.")
_is_sd1 = _has(SD1_TEXT_PREFIX)
_is_inpaint: _Probe = lambda sd: _conv_in_channels(sd) == 9  # noqa: E731

# Probes, most specific first. SD2 epsilon vs v cannot be told from keys; the loader
# settles it (yaml `parameterization`, else A1111's test run of the UNet).
ARCHITECTURE_PROBES: tuple[tuple[_Probe, Architecture], ...] = (
    (lambda sd: _is_sdxl_refiner(sd), Architecture("SDXL-refiner", "sdxl_refiner", "sd_xl_refiner.yaml")),
    (
        lambda sd: _is_sdxl_base(sd) and _is_inpaint(sd),
        Architecture("SDXL-inpaint", "sdxl", "sd_xl_base.yaml", inpainting=True),
    ),
    (lambda sd: _is_sdxl_base(sd), Architecture("SDXL", "sdxl", "sd_xl_base.yaml")),
    (
        lambda sd: _is_sd2(sd) and _is_inpaint(sd),
        Architecture("SD2-inpaint", "sd2", "v2-inpainting-inference.yaml", inpainting=True),
    ),
    (lambda sd: _is_sd2(sd), Architecture("SD2", "sd2", "v2-inference.yaml")),
    (
        lambda sd: _is_sd1(sd) and _is_inpaint(sd),
        Architecture("SD1-inpaint", "sd1", "v1-inpainting-inference.yaml", inpainting=True),
    ),
    (lambda sd: _is_sd1(sd), Architecture("SD1", "sd1", "v1-inference.yaml")),
)

SD2_V = Architecture("SD2-v", "sd2", "v2-inference-v.yaml", prediction_type="v_prediction")


def detect_architecture(state_dict: Mapping[str, Any]) -> Architecture:
    """The architecture of an LDM-layout state dict; ModelLoadError when none matches."""
    if not any(k.startswith(UNET_PREFIX) for k in state_dict):
        raise ModelLoadError("not a Stable Diffusion checkpoint (no model.diffusion_model.* weights)")
    for probe, architecture in ARCHITECTURE_PROBES:
        if probe(state_dict):
            return architecture
    raise ModelLoadError("unknown checkpoint architecture: no text encoder weights in a known layout")


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped LDM inference config (v1-inference.yaml, ...), parsed."""
    text = resources.files("sdstudio.assets").joinpath("configs", name).read_text(encoding="utf-8")
    config: dict[str, Any] = yaml.safe_load(text)  # the shipped files are mappings
    return config


def read_ldm_config(path: Path) -> dict[str, Any]:
    """An LDM yaml given by the user; ModelLoadError naming the file when unreadable."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"{path.name}: cannot read the model config ({exc})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise ModelLoadError(f"{path.name}: not an LDM model config (no top-level 'model')")
    return config


def config_beside(checkpoint: Path) -> Path | None:
    """`NAME.yaml` next to `NAME.safetensors`, as A1111 looks for it."""
    candidate = checkpoint.with_suffix(".yaml")
    return candidate if candidate.is_file() else None


def architecture_from_config(config: dict[str, Any], detected: Architecture) -> Architecture:
    """Refine a key-based guess with an LDM config (parameterization, inpainting)."""
    params = config.get("model", {}).get("params", {})
    prediction = "v_prediction" if params.get("parameterization") == "v" else "epsilon"
    unet_params = (params.get("unet_config") or params.get("network_config") or {}).get("params", {})
    inpainting = int(unet_params.get("in_channels", 4)) == 9 or detected.inpainting
    name = detected.name
    if detected.family == "sd2" and prediction == "v_prediction" and not inpainting:
        name = "SD2-v"
    return Architecture(name, detected.family, detected.config_name, prediction, inpainting)


# The side length a family was trained at when no yaml says otherwise (A1111's and Forge's
# presets: SD 512, SDXL 1024; SD2's 768 v-models say so in their yaml).
FAMILY_NATIVE_SIZE = {"sd1": 512, "sd2": 512, "sdxl": 1024, "sdxl_refiner": 1024}
DEFAULT_NATIVE_SIZE = 512


def checkpoint_native_size(checkpoint: Path) -> int:
    """The side length `checkpoint` was trained at: from its yaml, else its family's, else A1111's 512.

    Size defaults follow the model: the bundled tiny model draws 64x64 scenes, and asking
    it (or an SDXL model asked for 512) for another size is slow and off its training.
    """
    config = config_beside(checkpoint)
    size = _config_native_size(config) if config is not None else None
    if size:
        return size
    try:
        return FAMILY_NATIVE_SIZE[architecture_from_header(checkpoint).family]
    except ModelLoadError:
        return DEFAULT_NATIVE_SIZE


def checkpoint_latent_factor(checkpoint: Path) -> int:
    """How many pixels one latent cell spans: from the VAE of the yaml beside `checkpoint`, else SD's 8."""
    config = config_beside(checkpoint)
    if config is not None:
        try:
            ddconfig = read_ldm_config(config)["model"]["params"]["first_stage_config"]["params"]["ddconfig"]
            return 1 << (len(ddconfig["ch_mult"]) - 1)
        except (ModelLoadError, KeyError, TypeError, ValueError):
            pass
    return 8


def _config_native_size(path: Path) -> int | None:
    """The latent image_size times the VAE's down-sampling of an LDM yaml; None when it does not say (SDXL)."""
    try:
        params = read_ldm_config(path)["model"]["params"]
        factor = 1 << (len(params["first_stage_config"]["params"]["ddconfig"]["ch_mult"]) - 1)
        return int(params["image_size"]) * factor
    except (ModelLoadError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _HeaderTensor:
    """A tensor as a safetensors header describes it (the probes need only its shape)."""

    shape: tuple[int, ...]


def architecture_from_header(checkpoint: Path) -> Architecture:
    """The architecture of a .safetensors checkpoint from its header, no tensor read; ModelLoadError otherwise."""
    if checkpoint.suffix.lower() != ".safetensors":
        raise ModelLoadError(f"{checkpoint.name}: only a .safetensors header can be read without loading the file")
    from sdstudio.models.state_dict import read_safetensors_header  # imports torch: only when needed

    header = read_safetensors_header(checkpoint)
    tensors = {
        key: _HeaderTensor(tuple(int(n) for n in entry.get("shape") or ()))
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict)
    }
    return detect_architecture(tensors)
