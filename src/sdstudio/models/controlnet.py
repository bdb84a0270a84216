"""ControlNet and T2I-Adapter files: architecture from the keys, offline loading, sd-webui-controlnet's listing.

Files come in lllyasviel's original layout (`control_model.*` LDM keys, `.pth` or
`.safetensors`) or in diffusers' layout; T2I-Adapters in TencentARC's original layout
(`body.*`) or diffusers' (`adapter.*`). Nothing touches the network: the diffusers config
is the shipped one for the family (assets/configs/controlnet) with the sizes read from
the tensor shapes, so scaled-down models load as well as the standard ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from sdstudio.errors import ModelLoadError, NotFound
from sdstudio.models.detect import _indices, _largest_divisor
from sdstudio.models.hashes import legacy_model_hash
from sdstudio.models.loader import _empty_weights, _load_into
from sdstudio.models.memory import ModelMemory
from sdstudio.models.state_dict import load_state_dict

if TYPE_CHECKING:
    # diffusers' classes from their defining modules: mypy reads the top-level names as no-torch placeholders
    from diffusers.models.adapter import T2IAdapter
    from diffusers.models.controlnets.controlnet import ControlNetModel

    from sdstudio.models.registry import ModelEntry, ModelRegistry

ORIGINAL_PREFIX = "control_model."
CONTROL_LORA_KEY = "lora_controlnet"
Family = Literal["sd1", "sd2", "sdxl"]
Kind = Literal["controlnet", "t2i_adapter", "control_lora"]
Layout = Literal["original", "diffusers"]

# The shipped diffusers config of each (kind, family); sizes are then read from the weights.
SHIPPED_CONFIGS: dict[tuple[str, str], str] = {
    ("controlnet", "sd1"): "sd15.json",
    ("controlnet", "sd2"): "sd21.json",
    ("controlnet", "sdxl"): "sdxl.json",
    ("t2i_adapter", "sd1"): "t2i_adapter_sd15.json",
    ("t2i_adapter", "sdxl"): "t2i_adapter_sdxl.json",
}
SD2_CONTEXT = 1024
SDXL_CONTEXT = 2048
# A T2I-Adapter's pixel-unshuffle factor: 8 for SD1.x, 16 for SDXL (conv_in sees in_channels * factor²).
ADAPTER_DOWNSCALE = {"sd1": 8, "sdxl": 16}
SD1_HEADS = 8
HEAD_CHANNELS = 64
MEMORY_KIND = "controlnet"


@dataclass(frozen=True)
class ControlNetArchitecture:
    """What a control model file holds: the base model family, the kind of model and its key layout."""

    family: Family
    kind: Kind
    layout: Layout


def shipped_controlnet_config(name: str) -> dict[str, Any]:
    """A shipped diffusers config (sd15.json, t2i_adapter_sdxl.json, ...), parsed."""
    text = resources.files("sdstudio.assets").joinpath("configs", "controlnet", name).read_text(encoding="utf-8")
    config: dict[str, Any] = json.loads(text)
    config.pop("_class_name", None)  # diffusers' note of the class, not an argument
    return config


def _without_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The keys under `prefix` with it removed, when any key has it; else the dict as it is."""
    if any(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    return dict(state_dict)


def _shape(weights: Mapping[str, Any], key: str) -> tuple[int, ...]:
    tensor = weights.get(key)
    if tensor is None:
        raise ModelLoadError(f"not a ControlNet layout sdstudio knows: it has no {key}")
    return tuple(int(n) for n in tensor.shape)


def _unet_family(weights: Mapping[str, Any], added_embedding: str, attention: str) -> Family:
    """SDXL by its added (label) embedding or a 2048-wide context, SD2 by a 1024-wide one or linear projections."""
    if added_embedding in weights:
        return "sdxl"
    context_key = f"{attention}.transformer_blocks.0.attn2.to_k.weight"
    context = _shape(weights, context_key)[1] if context_key in weights else 0
    if context >= SDXL_CONTEXT:
        return "sdxl"
    proj_in = weights.get(f"{attention}.proj_in.weight")
    linear = proj_in is not None and len(proj_in.shape) == 2
    return "sd2" if context == SD2_CONTEXT or linear else "sd1"


def _adapter_family(conv_in_shape: tuple[int, ...]) -> Family:
    """SDXL adapters unshuffle by 16 (1 or 3 channels -> 256 or 768 inputs), SD1.x ones by 8."""
    return "sdxl" if conv_in_shape[1] % (ADAPTER_DOWNSCALE["sdxl"] ** 2) == 0 else "sd1"


def detect_controlnet(state_dict: Mapping[str, Any]) -> ControlNetArchitecture:
    """The architecture of a control model's state dict; ModelLoadError when it is none sdstudio knows."""
    original = _without_prefix(state_dict, ORIGINAL_PREFIX)
    if CONTROL_LORA_KEY in state_dict:
        family: Family = "sdxl" if any(k.startswith("label_emb.") for k in state_dict) else "sd1"
        return ControlNetArchitecture(family, "control_lora", "original")
    if "input_hint_block.0.weight" in original or "zero_convs.0.0.weight" in original:
        return ControlNetArchitecture(
            _unet_family(original, "label_emb.0.0.weight", "middle_block.1"), "controlnet", "original"
        )
    if "controlnet_cond_embedding.conv_in.weight" in state_dict or "controlnet_down_blocks.0.weight" in state_dict:
        return ControlNetArchitecture(
            _unet_family(state_dict, "add_embedding.linear_1.weight", "mid_block.attentions.0"),
            "controlnet",
            "diffusers",
        )
    if "adapter.conv_in.weight" in state_dict:
        family = _adapter_family(_shape(state_dict, "adapter.conv_in.weight"))
        return ControlNetArchitecture(family, "t2i_adapter", "diffusers")
    if "conv_in.weight" in state_dict and "body.0.block1.weight" in state_dict:
        return ControlNetArchitecture(_adapter_family(_shape(state_dict, "conv_in.weight")), "t2i_adapter", "original")
    raise ModelLoadError(
        "not a ControlNet, T2I-Adapter or control-LoRA (no control_model.*, controlnet_cond_embedding.*, "
        "adapter.* or body.* weights)"
    )


# -- ControlNets -------------------------------------------------------------------------------


def _layers_per_block(original: Mapping[str, Any]) -> int:
    """ResBlocks per level of an LDM ControlNet: the input blocks before the first downsampler."""
    blocks = _indices(original, "input_blocks.")
    first_down = next((i for i in blocks if f"input_blocks.{i}.0.op.weight" in original), None)
    return (first_down - 1) if first_down else max(len(blocks) - 1, 1)


def original_to_diffusers(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lllyasviel's LDM ControlNet keys (prefix removed) as diffusers' ControlNetModel names them."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    config = {"layers_per_block": _layers_per_block(original)}
    converted = convert_controlnet_checkpoint(dict(original), config)  # type: ignore[no-untyped-call]
    # the converter leaves SDXL's added embedding (label_emb) out; its own table names it
    added: dict[str, str] = DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"]  # type: ignore[index]
    converted.update({name: original[ldm] for name, ldm in added.items() if ldm in original})
    # the converter fills what the file lacks with None: leave those out so the check names them
    return {str(k): v for k, v in converted.items() if v is not None}


def original_state_dict(model: ControlNetModel) -> dict[str, torch.Tensor]:
    """A diffusers ControlNet's weights in lllyasviel's original layout (`control_model.*`), as files ship it."""
    from sdstudio.models.ldm_names import ldm_unet_module_names

    names = ldm_unet_module_names(model)
    blocks = len(model.controlnet_cond_embedding.blocks)
    names["controlnet_cond_embedding.conv_in"] = "input_hint_block.0"
    names.update({f"controlnet_cond_embedding.blocks.{i}": f"input_hint_block.{2 * i + 2}" for i in range(blocks)})
    names["controlnet_cond_embedding.conv_out"] = f"input_hint_block.{2 * blocks + 2}"
    names.update({f"controlnet_down_blocks.{i}": f"zero_convs.{i}.0" for i in range(len(model.controlnet_down_blocks))})
    names["controlnet_mid_block"] = "middle_block_out.0"
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        state[f"{ORIGINAL_PREFIX}{names[module]}.{leaf}"] = tensor
    return state


def controlnet_config(weights: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """The diffusers ControlNetModel config of diffusers-named weights: the shipped one, sizes from the shapes."""
    config = shipped_controlnet_config(SHIPPED_CONFIGS[("controlnet", family)])
    levels = _indices(weights, "down_blocks.")
    if not levels:
        raise ModelLoadError("not a ControlNet layout sdstudio knows: it has no down blocks")
    widths = [_shape(weights, f"down_blocks.{b}.resnets.0.conv2.weight")[0] for b in levels]
    depths = [len(_indices(weights, f"down_blocks.{b}.attentions.0.transformer_blocks.")) for b in levels]
    middle_depth = len(_indices(weights, "mid_block.attentions.0.transformer_blocks."))
    layers = [d or 1 for d in depths]
    if not depths[-1]:
        layers[-1] = middle_depth  # diffusers takes the middle block's depth from the last entry
    linear = len(_shape(weights, "mid_block.attentions.0.proj_in.weight")) == 2
    hint_blocks = _indices(weights, "controlnet_cond_embedding.blocks.")
    first_width, in_channels = _shape(weights, "conv_in.weight")[:2]
    hint_width, hint_channels = _shape(weights, "controlnet_cond_embedding.conv_in.weight")[:2]
    config.update(
        in_channels=in_channels,
        block_out_channels=widths,
        layers_per_block=len(_indices(weights, "down_blocks.0.resnets.")),
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        transformer_layers_per_block=layers if len(set(layers)) > 1 else layers[0],
        cross_attention_dim=_shape(weights, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")[1],
        use_linear_projection=linear,
        conditioning_channels=hint_channels,
        conditioning_embedding_out_channels=[
            hint_width,
            *(_shape(weights, f"controlnet_cond_embedding.blocks.{i}.weight")[0] for i in hint_blocks if i % 2),
        ],
    )
    if linear:  # SD2 and SDXL: 64 channels per head; diffusers' `attention_head_dim` is the head count
        head_channels = _largest_divisor([first_width], HEAD_CHANNELS)
        config["attention_head_dim"] = [width // head_channels for width in widths]
    else:
        config["attention_head_dim"] = _largest_divisor(widths, SD1_HEADS)
    if family == "sdxl":
        config["projection_class_embeddings_input_dim"] = _shape(weights, "add_embedding.linear_1.weight")[1]
    return config


# -- T2I-Adapters ------------------------------------------------------------------------------


def original_adapter_to_diffusers(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TencentARC's adapter keys (`body.K.block1`) as diffusers' T2IAdapter names them (`adapter.body.B.resnets.R`)."""
    body = _indices(original, "body.")
    # a level starts with a channel change (in_conv); the first such ResBlock's index is the blocks per level
    starts = [k for k in body if f"body.{k}.in_conv.weight" in original]
    per_level = starts[0] if starts else 2
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in original.items():
        if not key.startswith("body."):
            converted[f"adapter.{key}"] = tensor
            continue
        _, number, rest = key.split(".", 2)
        level, block = divmod(int(number), per_level)
        inside = rest if rest.startswith("in_conv.") else f"resnets.{block}.{rest}"
        converted[f"adapter.body.{level}.{inside}"] = tensor
    return converted


def adapter_config(weights: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """The diffusers T2IAdapter config of diffusers-named weights: the shipped one, sizes from the shapes."""
    config = shipped_controlnet_config(SHIPPED_CONFIGS[("t2i_adapter", family)])
    factor = ADAPTER_DOWNSCALE[family]
    levels = _indices(weights, "adapter.body.")
    config.update(
        in_channels=_shape(weights, "adapter.conv_in.weight")[1] // (factor * factor),
        channels=[_shape(weights, f"adapter.body.{b}.resnets.0.block1.weight")[0] for b in levels],
        num_res_blocks=len(_indices(weights, "adapter.body.0.resnets.")),
        downscale_factor=factor,
    )
    return config


# -- Loading -----------------------------------------------------------------------------------


def load_controlnet(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ControlNetModel | T2IAdapter:
    """A ControlNet or T2I-Adapter file as a diffusers model in eval mode; ModelLoadError naming the file and why.

    Pickled files go through the safe unpickler: one that asks for code is refused (UnsafeFileError).
    """
    from diffusers.models.adapter import T2IAdapter
    from diffusers.models.controlnets.controlnet import ControlNetModel

    path = Path(path)
    state_dict = load_state_dict(path)
    try:
        architecture = detect_controlnet(state_dict)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path.name}: {exc}") from None
    if architecture.kind == "control_lora":
        raise ModelLoadError(
            f"{path.name}: a control-LoRA (lora_controlnet): it holds only differences to the base model's UNet, "
            "which sdstudio does not apply; use a full ControlNet file instead"
        )
    model: ControlNetModel | T2IAdapter
    try:
        if architecture.kind == "controlnet":
            weights = state_dict
            if architecture.layout == "original":
                weights = original_to_diffusers(_without_prefix(state_dict, ORIGINAL_PREFIX))
            config = controlnet_config(weights, architecture.family)
            with _empty_weights():
                model = ControlNetModel(**config)
            what = f"{architecture.family.upper()} ControlNet"
        else:
            weights = state_dict if architecture.layout == "diffusers" else original_adapter_to_diffusers(state_dict)
            config = adapter_config(weights, architecture.family)
            with _empty_weights():
                model = T2IAdapter(**config)
            what = f"{architecture.family.upper()} T2I-Adapter"
        _load_into(model, weights, what, path)
    except ModelLoadError as exc:
        message = str(exc)
        raise ModelLoadError(message if message.startswith(path.name) else f"{path.name}: {message}") from None
    except (RuntimeError, ValueError, KeyError) as exc:  # shapes that do not fit the layout read from the keys
        raise ModelLoadError(f"{path.name}: the weights do not fit a {architecture.kind} layout ({exc})") from None
    torch.nn.Module.to(model, device=device, dtype=dtype)  # diffusers' own `to` is untyped
    model.eval().requires_grad_(False)
    return model


# -- Listing and lookup (sd-webui-controlnet's) ------------------------------------------------


class ControlNetLibrary:
    """The ControlNet files of the data dir, titled and found as sd-webui-controlnet does, loaded through `memory`.

    Loaded models live in the memory owner (app.memory: its byte budget and per-kind limit apply) under
    the kind "controlnet"; without one, a private owner keeps the last `max_loaded`, the oldest evicted first.
    """

    def __init__(self, registry: ModelRegistry, memory: ModelMemory | None = None, max_loaded: int = 2):
        self.registry = registry
        self.memory = memory if memory is not None else ModelMemory(limits={MEMORY_KIND: max(1, max_loaded)})

    def _entries(self) -> list[ModelEntry]:
        # Not hashed whole: a title needs only the legacy hash, which reads 64 KiB (ControlNets are GBs each).
        return self.registry.list("controlnet", with_hashes=False, include_unusable=False)

    @staticmethod
    def title_of(entry: ModelEntry) -> str:
        """`<stem> [<legacy 8-hex hash>]`, as sd-webui-controlnet titles its models."""
        legacy = entry.hashes.legacy if entry.hashes else legacy_model_hash(entry.path)
        return f"{entry.path.stem} [{legacy}]"

    def titles(self) -> list[str]:
        """Every usable ControlNet file's title, sorted by name."""
        return [self.title_of(entry) for entry in self._entries()]

    def title(self, name: str) -> str:
        """The title of the file `name` finds (what an infotext records)."""
        path = self.find(name)
        return next((self.title_of(entry) for entry in self._entries() if entry.path == path), path.stem)

    def find(self, name: str) -> Path:
        """A file by exact title, by file stem, else the shortest name containing the text (case-insensitive)."""
        query = name.strip()
        entries = self._entries()
        titled = {self.title_of(entry): entry for entry in entries}
        if query in titled:
            return titled[query].path
        plain = query[: query.rindex("[")].strip() if query.endswith("]") and "[" in query else query
        for entry in entries:
            if plain in (entry.path.stem, entry.path.name):
                return entry.path
        lowered = plain.lower()
        containing = [entry for entry in entries if lowered and lowered in entry.path.name.lower()]
        if containing:
            return min(containing, key=lambda entry: (len(entry.path.name), entry.path.name)).path
        unusable = [e for e in self.registry.list("controlnet", with_hashes=False) if not e.usable]
        for entry in unusable:  # say why a file that is there cannot be used, rather than that it is missing
            if plain in (entry.path.stem, entry.path.name):
                entry.require_usable()
        available = ", ".join(titled) or "none"
        raise NotFound(f"no ControlNet model named {query!r} (available: {available})")

    def load(
        self, name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> ControlNetModel | T2IAdapter:
        """The model `name` finds, loaded once and kept while the memory owner keeps it."""
        path = self.find(name)
        # the file's mtime in the key: a file replaced under the same name is loaded afresh
        key = f"{MEMORY_KIND}:{path}:{path.stat().st_mtime_ns}:{torch.device(device)}:{dtype}"
        return self.memory.get_or_load(key, MEMORY_KIND, lambda: load_controlnet(path, device, dtype))
