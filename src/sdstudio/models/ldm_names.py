"""The original LDM (CompVis) name of every module of a diffusers UNet2DConditionModel.

The mapping is derived from the UNet's own block structure (levels, resnets per level, which
blocks have attention, the mid block), so it holds for any layout diffusers can load from an
LDM checkpoint, tiny and SDXL ones included: it is the inverse of diffusers'
`convert_ldm_unet_checkpoint`. The model saver uses it to write single-file checkpoints and
the LoRA loader to read LoRA keys spelled the LDM way (tests check both round trips).
"""

from __future__ import annotations

from typing import Any

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
# Modules outside the blocks: diffusers -> LDM. SDXL's added embedding and the class
# embedding of class-conditioned UNets both sit in LDM's `label_emb`.
_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _per_block(value: int | list[int] | tuple[int, ...], count: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * count


def _block_prefixes(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers block-level prefixes (`down_blocks.1.attentions.0`) -> LDM ones (`input_blocks.4.1`)."""
    prefixes: dict[str, str] = {}
    # Any module is read as diffusers' UNet layout, by attribute (one without it raises AttributeError or
    # TypeError, which the LoRA index relies on); torch would type every attribute as Tensor | Module.
    layout: Any = unet
    down_blocks = list(layout.down_blocks)
    layers = _per_block(layout.config.layers_per_block, len(down_blocks))
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
    for b, block in enumerate(getattr(layout, "up_blocks", ())):  # a ControlNet has none
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
    """Every named module of a diffusers UNet2DConditionModel -> its LDM name (without `model.diffusion_model.`)."""
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
