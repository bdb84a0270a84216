"""Architecture detection from a checkpoint's keys and shapes, as a table of probes.

Each probe looks at the state dict and answers whether it is its architecture (like
ComfyUI's model detection and diffusers' single-file key checks); the first match wins,
so more specific rows come first. A `NAME.yaml` beside the checkpoint overrides the
guess: its LDM config is used as it is. Without one, the UNet and VAE sizes are read from
the tensor shapes (like ComfyUI's UNet config detection); a checkpoint of the standard
sizes keeps its family's shipped config unchanged, any other gets the shipped config
with its own sizes in place.
"""

from __future__ import annotations

import filecmp
from collections.abc import Callable, Iterable, Mapping
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


def bundled_tiny_model() -> Path | None:
    """The tiny model shipped inside the package, when present."""
    path = Path(str(resources.files("sdstudio.assets").joinpath("tiny", "sdstudio-tiny.safetensors")))
    return path if path.is_file() else None


def bundled_copy_config(checkpoint: Path) -> Path | None:
    """The bundled model's yaml when `checkpoint` is a byte-for-byte copy of the bundled model.

    Its scale_factor (the latent scale found in training) is in the yaml only, not in the
    weights, so a copy that lost its yaml could not draw the same images without this.
    """
    bundled = bundled_tiny_model()
    if bundled is None or not bundled.with_suffix(".yaml").is_file() or not checkpoint.is_file():
        return None
    if bundled.stat().st_size != checkpoint.stat().st_size or not filecmp.cmp(bundled, checkpoint, shallow=False):
        return None
    return bundled.with_suffix(".yaml")


def known_config(checkpoint: Path) -> Path | None:
    """The LDM yaml that describes `checkpoint`: beside it, or the bundled one for a copy of the bundled model."""
    return config_beside(checkpoint) or bundled_copy_config(checkpoint)


class UnknownLayout(ValueError):
    """A checkpoint part whose architecture cannot be read from its keys and shapes."""

    def __init__(self, part: str, reason: str):
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason


# The head counts the shapes cannot tell: SD1 (conv proj_in) uses 8 heads per level,
# SD2 and SDXL (linear proj_in) 64 channels per head.
SD1_HEADS = 8
SD2_HEAD_CHANNELS = 64


def _indices(keys: Iterable[str], prefix: str) -> list[int]:
    """The numbers N of the keys spelled PREFIX + "N.", sorted."""
    found = set()
    for key in keys:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _largest_divisor(widths: Iterable[int], limit: int) -> int:
    """The largest number up to `limit` dividing every width (the family's head size where it fits)."""
    widths = list(widths)
    return next(d for d in range(limit, 0, -1) if all(w % d == 0 for w in widths))


def text_heads(width: int) -> int:
    """CLIP's attention heads for a width: one per 64 channels (the largest count up to that dividing it)."""
    return _largest_divisor([width], max(1, width // 64))


class _Shapes:
    """Shapes of one part's tensors (keys under `prefix`); a missing tensor is an UnknownLayout."""

    def __init__(self, state_dict: Mapping[str, Any], prefix: str, part: str):
        self.state_dict, self.prefix, self.part = state_dict, prefix, part
        self.keys = [k[len(prefix) :] for k in state_dict if k.startswith(prefix)]

    def __call__(self, name: str) -> tuple[int, ...]:
        tensor = self.state_dict.get(self.prefix + name)
        if tensor is None:
            raise UnknownLayout(self.part, f"it has no {self.prefix}{name}")
        return tuple(int(n) for n in tensor.shape)

    def has(self, name: str) -> bool:
        return self.prefix + name in self.state_dict

    def count(self, prefix: str) -> int:
        return len(_indices(self.keys, prefix))


def _unet_levels(shapes: _Shapes) -> list[list[tuple[int, int]]]:
    """(width, transformer depth) of each ResBlock of input_blocks, grouped by level (split at the downsamplers)."""
    blocks = _indices(shapes.keys, "input_blocks.")
    gap = next((i for i, b in enumerate(blocks) if i != b), None)
    if gap is not None:
        raise UnknownLayout("UNet", f"input_blocks.{gap} is missing while later input blocks are there")
    levels: list[list[tuple[int, int]]] = [[]]
    for i in blocks[1:]:
        if shapes.has(f"input_blocks.{i}.0.op.weight"):
            levels.append([])
            continue
        width = shapes(f"input_blocks.{i}.0.out_layers.3.weight")[0]
        levels[-1].append((width, shapes.count(f"input_blocks.{i}.1.transformer_blocks.")))
    return levels


def infer_unet_params(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The LDM `unet_config.params` of a UNet, read from its tensor shapes; UnknownLayout says why not."""
    shapes = _Shapes(state_dict, UNET_PREFIX, "UNet")
    model_channels, in_channels = shapes("input_blocks.0.0.weight")[:2]
    out_channels = shapes("out.2.weight")[0]
    levels = _unet_levels(shapes)
    counts = [len(level) for level in levels]
    if 0 in counts or len(set(counts)) > 1:
        raise UnknownLayout("UNet", f"its levels do not have one same number of ResBlocks ({counts})")
    widths, depths = [], []
    for number, level in enumerate(levels):
        if len(set(level)) > 1:
            raise UnknownLayout("UNet", f"level {number} mixes ResBlock widths or transformer depths ({level})")
        widths.append(level[0][0])
        depths.append(level[0][1])
    if any(width % model_channels for width in widths):
        raise UnknownLayout("UNet", f"level widths {widths} are not multiples of the first ({model_channels})")
    middle = shapes.count("middle_block.1.transformer_blocks.")
    if not middle:
        raise UnknownLayout("UNet", "its middle block has no transformer (no cross-attention)")
    attention = [level for level, depth in enumerate(depths) if depth]
    if attention and attention[-1] == len(levels) - 1 and depths[-1] != middle:
        raise UnknownLayout(
            "UNet", f"the last level's transformer depth {depths[-1]} differs from the middle's {middle}"
        )
    linear = len(shapes("middle_block.1.proj_in.weight")) == 2
    params: dict[str, Any] = {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "model_channels": model_channels,
        "attention_resolutions": [2**level for level in reversed(attention)],
        "num_res_blocks": counts[0],
        "channel_mult": [width // model_channels for width in widths],
        # LDM (and diffusers) take the middle block's depth from the last entry
        "transformer_depth": middle if all(depths[level] == middle for level in attention) else [*depths[:-1], middle],
        "context_dim": shapes("middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1],
        "use_linear_in_transformer": linear,
        "legacy": False,
    }
    if linear:
        # diffusers derives each level's heads as (model_channels // num_head_channels) * mult
        params["num_head_channels"] = _largest_divisor([model_channels], SD2_HEAD_CHANNELS)
    else:
        params["num_heads"] = _largest_divisor(widths, SD1_HEADS)
    if shapes.has("label_emb.0.0.weight"):
        params["num_classes"] = "sequential"
        params["adm_in_channels"] = shapes("label_emb.0.0.weight")[1]
    return params


def _unet_signature(params: Mapping[str, Any]) -> tuple[Any, ...]:
    """What an LDM UNet config builds, spelled one way (attention levels with depth and heads, middle depth...)."""
    base = int(params["model_channels"])
    mult = [int(m) for m in params["channel_mult"]]
    depth = params.get("transformer_depth", 1)
    depths = [int(depth)] * len(mult) if isinstance(depth, int) else [int(d) for d in depth]
    head_channels = int(params.get("num_head_channels", -1))
    context = params["context_dim"]
    attention = tuple(
        (level, depths[level], base * m // head_channels if head_channels > 0 else int(params["num_heads"]))
        for level, m in enumerate(mult)
        if 2**level in params["attention_resolutions"]
    )
    return (
        int(params["in_channels"]),
        int(params["out_channels"]),
        base,
        tuple(mult),
        int(params["num_res_blocks"]),
        attention,
        depths[-1],
        int(context[0] if isinstance(context, list) else context),
        bool(params.get("use_linear_in_transformer", False)),
        int(params["adm_in_channels"]) if params.get("num_classes") == "sequential" else None,
    )


def infer_vae_ddconfig(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """The LDM `ddconfig` of the checkpoint's VAE, read from its tensor shapes; None when it has no VAE."""
    shapes = _Shapes(state_dict, VAE_PREFIX, "VAE")
    if not shapes.keys:
        return None
    ch, in_channels = shapes("encoder.conv_in.weight")[:2]
    levels = _indices(shapes.keys, "encoder.down.")
    if not levels or levels != list(range(len(levels))):
        raise UnknownLayout("VAE", f"its encoder levels are {levels}, not 0, 1, 2...")
    widths = [shapes(f"encoder.down.{level}.block.0.conv2.weight")[0] for level in levels]
    z_channels = shapes("decoder.conv_in.weight")[1]
    return {
        "double_z": shapes("encoder.conv_out.weight")[0] == 2 * z_channels,
        "z_channels": z_channels,
        "in_channels": in_channels,
        "out_ch": shapes("decoder.conv_out.weight")[0],
        "ch": ch,
        "ch_mult": [width // ch for width in widths],
        "num_res_blocks": shapes.count("encoder.down.0.block."),
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def _vae_signature(ddconfig: Mapping[str, Any]) -> tuple[Any, ...]:
    keys = ("ch", "num_res_blocks", "z_channels", "in_channels", "out_ch")
    return (tuple(int(m) for m in ddconfig["ch_mult"]), *(int(ddconfig[k]) for k in keys))


def inferred_ldm_config(state_dict: Mapping[str, Any], architecture: Architecture) -> dict[str, Any]:
    """The LDM config of a checkpoint without a yaml: its family's shipped one, with the sizes read from the weights.

    Standard checkpoints get the shipped config unchanged. Others also take their
    `scale_factor` from the weights when they carry it (LDM's scale_by_std buffer).
    UnknownLayout when the shapes do not describe a UNet (or VAE) sdstudio can build.
    """
    config = shipped_config(architecture.config_name)  # a fresh parse: changing it changes no other load
    params = config["model"]["params"]
    unet_config = params["unet_config" if "unet_config" in params else "network_config"]
    shipped_ddconfig = params["first_stage_config"]["params"]["ddconfig"]
    unet = infer_unet_params(state_dict)
    ddconfig = infer_vae_ddconfig(state_dict)
    same_unet = _unet_signature(unet) == _unet_signature(unet_config["params"])
    same_vae = ddconfig is None or _vae_signature(ddconfig) == _vae_signature(shipped_ddconfig)
    if same_unet and same_vae:
        return config
    if not same_unet:
        unet_config["params"] = unet
    if not same_vae and ddconfig is not None:
        shipped_ddconfig.update(ddconfig)
        params["first_stage_config"]["params"]["embed_dim"] = ddconfig["z_channels"]
    scale = state_dict.get("scale_factor")
    if scale is not None and scale.numel() == 1:
        params["scale_factor"] = float(scale)
    return config


# The side length a family was trained at when no yaml says otherwise (A1111's and Forge's
# presets: SD 512, SDXL 1024; SD2's 768 v-models say so in their yaml).
FAMILY_NATIVE_SIZE = {"sd1": 512, "sd2": 512, "sdxl": 1024, "sdxl_refiner": 1024}
DEFAULT_NATIVE_SIZE = 512


def checkpoint_native_size(checkpoint: Path) -> int:
    """The side length `checkpoint` was trained at: from its yaml, else its family's, else A1111's 512.

    Size defaults follow the model: the bundled tiny model draws 64x64 scenes, and asking
    it (or an SDXL model asked for 512) for another size is slow and off its training.
    """
    config = known_config(checkpoint)
    size = _config_native_size(config) if config is not None else None
    if size:
        return size
    try:
        return FAMILY_NATIVE_SIZE[architecture_from_header(checkpoint).family]
    except ModelLoadError:
        return DEFAULT_NATIVE_SIZE


def _config_latent_factor(params: dict[str, Any]) -> int:
    """How many pixels one latent cell spans, from an LDM config's model params (2 ** VAE down-samplings)."""
    return 1 << (len(params["first_stage_config"]["params"]["ddconfig"]["ch_mult"]) - 1)


def checkpoint_latent_factor(checkpoint: Path) -> int:
    """How many pixels one latent cell spans: from the VAE of the yaml beside `checkpoint`, else SD's 8."""
    config = known_config(checkpoint)
    if config is not None:
        try:
            return _config_latent_factor(read_ldm_config(config)["model"]["params"])
        except (ModelLoadError, KeyError, TypeError, ValueError):
            pass
    return 8


def _config_native_size(path: Path) -> int | None:
    """The latent image_size times the VAE's down-sampling of an LDM yaml; None when it does not say (SDXL)."""
    try:
        params = read_ldm_config(path)["model"]["params"]
        return int(params["image_size"]) * _config_latent_factor(params)
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
