"""Which module of a loaded model a LoRA key names.

kohya-ss names a module by its path with "." replaced by "_" under a prefix
(`lora_unet_`, `lora_te_`, `lora_te1_`, `lora_te2_`). For the UNet the path is either the
diffusers one (SD1/SD2 files from sd-scripts: `lora_unet_down_blocks_0_attentions_0_proj_in`)
or the original LDM one (SDXL files and many LyCORIS files:
`lora_unet_input_blocks_1_1_proj_in`), so both spellings are indexed. The LDM path of each
diffusers module is derived from the UNet's own block structure (`ldm_unet_module_names`),
the inverse of diffusers' `convert_ldm_unet_checkpoint` (tests check the round trip).
"""

from __future__ import annotations

import re
import torch

# Inside a ResnetBlock2D: diffusers name -> LDM ResBlock name.
_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# Top-level modules: diffusers -> LDM.
_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _per_block(value, count: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * count


def _block_prefixes(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers block-level prefixes (`down_blocks.1.attentions.0`) -> LDM ones (`input_blocks.4.1`)."""
    prefixes: dict[str, str] = {}
    down_blocks = list(unet.down_blocks)
    layers = _per_block(unet.config.layers_per_block, len(down_blocks))
    index = 1  # input_blocks.0 is conv_in
    for b, block in enumerate(down_blocks):
        for j in range(layers[b]):
            prefixes[f"down_blocks.{b}.resnets.{j}"] = f"input_blocks.{index}.0"
            if getattr(block, "attentions", None) is not None:
                prefixes[f"down_blocks.{b}.attentions.{j}"] = f"input_blocks.{index}.1"
            index += 1
        if getattr(block, "downsamplers", None):
            prefixes[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1
    mid = getattr(unet, "mid_block", None)
    if mid is not None:
        prefixes["mid_block.resnets.0"] = "middle_block.0"
        if getattr(mid, "attentions", None):
            prefixes["mid_block.attentions.0"] = "middle_block.1"
            prefixes["mid_block.resnets.1"] = "middle_block.2"
        elif len(mid.resnets) > 1:
            prefixes["mid_block.resnets.1"] = "middle_block.1"
    index = 0
    for b, block in enumerate(unet.up_blocks):
        count = len(block.resnets)
        has_attention = getattr(block, "attentions", None) is not None
        for j in range(count):
            prefixes[f"up_blocks.{b}.resnets.{j}"] = f"output_blocks.{index + j}.0"
            if has_attention:
                prefixes[f"up_blocks.{b}.attentions.{j}"] = f"output_blocks.{index + j}.1"
        if getattr(block, "upsamplers", None):
            prefixes[f"up_blocks.{b}.upsamplers.0"] = f"output_blocks.{index + count - 1}.{2 if has_attention else 1}"
        index += count
    return prefixes


def ldm_unet_module_names(unet: torch.nn.Module) -> dict[str, str]:
    """Every named module of a diffusers UNet2DConditionModel -> its original LDM (CompVis) name."""
    prefixes = _block_prefixes(unet)
    ordered = sorted(prefixes, key=len, reverse=True)
    names: dict[str, str] = {}
    for name, _ in unet.named_modules():
        if not name:
            continue
        if name in _TOP_LEVEL:
            names[name] = _TOP_LEVEL[name]
            continue
        for prefix in ordered:
            if name == prefix or name.startswith(prefix + "."):
                rest = name[len(prefix) + 1 :]
                if ".resnets." in prefix and rest:
                    head, _, tail = rest.partition(".")
                    rest = _RESNET_PARTS.get(head, head) + (f".{tail}" if tail else "")
                names[name] = prefixes[prefix] + (f".{rest}" if rest else "")
                break
    return names


def kohya_name(path: str) -> str:
    """A module path as kohya writes it in a key (dots become underscores)."""
    return path.replace(".", "_")


class ModuleIndex:
    """Looks up a model's modules by kohya name (diffusers or LDM spelling) or by dotted path."""

    def __init__(self, model: torch.nn.Module, ldm_names: dict[str, str] | None = None):
        self.model = model
        self.modules: dict[str, torch.nn.Module] = {}
        self.by_kohya: dict[str, str] = {}
        self.dotted_aliases: dict[str, str] = {}
        for name, module in model.named_modules():
            if not name or not _has_weight(module):
                continue
            self.modules[name] = module
            self.by_kohya[kohya_name(name)] = name
        for name, ldm in (ldm_names or {}).items():
            if name in self.modules:
                self.by_kohya.setdefault(kohya_name(ldm), name)

    @classmethod
    def for_text_encoder(cls, encoder: torch.nn.Module) -> "ModuleIndex":
        """Index a transformers CLIP text model; kohya writes its paths from `text_model.` down.

        transformers 5 puts CLIPTextModel's layers at the top (`encoder.layers.0...`), older
        versions under `text_model.`; kohya files always say `text_model_encoder_layers_0_...`.
        """
        index = cls(encoder)
        if not hasattr(encoder, "text_model"):
            for name in index.modules:
                index.by_kohya.setdefault(kohya_name("text_model." + name), name)
                index.dotted_aliases["text_model." + name] = name
        return index

    @classmethod
    def for_unet(cls, unet: torch.nn.Module) -> "ModuleIndex":
        """Index with the LDM spellings too (when the model has diffusers' UNet block layout)."""
        try:
            ldm = ldm_unet_module_names(unet)
        except (AttributeError, TypeError):
            ldm = {}
        return cls(unet, ldm)

    def resolve(self, key: str) -> str | None:
        """The module path for a kohya-style name or a dotted path; None when the model has no such module."""
        if key in self.modules:
            return key
        if key in self.dotted_aliases:
            return self.dotted_aliases[key]
        return self.by_kohya.get(key) or self.by_kohya.get(kohya_name(key))


def _has_weight(module: torch.nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), torch.Tensor)


# diffusers' older attention-processor LoRA names -> the module they adapt.
_PROCESSOR_NAMES = [
    (re.compile(r"\.processor\.(to_[qkv])_lora$"), r".\1"),
    (re.compile(r"\.processor\.to_out_lora$"), r".to_out.0"),
    (re.compile(r"\.processor\.(add_[qkv]_proj)_lora$"), r".\1"),
]


def normalise_dotted(path: str) -> str:
    """Module path from diffusers' processor-style LoRA names (`attn1.processor.to_q_lora` -> `attn1.to_q`)."""
    for pattern, replacement in _PROCESSOR_NAMES:
        path = pattern.sub(replacement, path)
    return path
