"""OpenAI's CLIP file (`ViT-L-14.pt`, what A1111's `clip.load` reads) as a transformers `CLIPModel`.

OpenAI ships CLIP as a TorchScript archive; its tensors are read by
`models.torchscript_archive` (nothing in the archive runs) and a plain state dict saved with
torch.save is read by the restricted unpickler. The keys are those of OpenAI's clip/model.py
(`visual.conv1.weight`, `visual.transformer.resblocks.N.attn.in_proj_weight`, `token_embedding.weight`,
`positional_embedding`, `ln_final`, `text_projection`, `visual.proj`, `logit_scale`, ...);
they are renamed to `CLIPModel`'s, the packed q/k/v projections split, the two projection
matrices transposed (OpenAI multiplies `x @ proj`, transformers applies a Linear), and the
config is read from the shapes as OpenAI's `build_model` reads it (64-wide heads, QuickGELU).
Only the ViT variants are read (ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px); the ResNet ones are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdstudio.errors import ModelLoadError
from sdstudio.postprocess.blip_checkpoint import load_converted

A1111_CLIP_FILE = "ViT-L-14.pt"
"""The file A1111's `clip.load("ViT-L/14", download_root=...)` reads."""

HEAD_WIDTH = 64  # OpenAI's build_model: heads = width // 64
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407  # OpenAI pools the text at the end token (the highest id, found by argmax)

_TOP_LEVEL = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_LAYER = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_LAYER_PARTS = {
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
    "attn.out_proj.": "self_attn.out_proj.",
}
_PACKED_PROJECTIONS = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}


def transformers_clip_state_dict(original: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI CLIP keys converted to `CLIPModel`'s; keys it does not use (attention masks, sizes) are left out."""
    converted: dict[str, Any] = {}
    for key, tensor in original.items():
        if key in _TOP_LEVEL:
            converted[_TOP_LEVEL[key]] = tensor
        elif key in _TRANSPOSED:
            converted[_TRANSPOSED[key]] = tensor.t().contiguous()
        elif match := _LAYER.match(key):
            tower, index, part = match.groups()
            layer = f"{'vision_model' if tower else 'text_model'}.encoder.layers.{index}."
            if part in _PACKED_PROJECTIONS:
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    converted[f"{layer}self_attn.{name}.{_PACKED_PROJECTIONS[part]}"] = chunk
                continue
            for old, new in _LAYER_PARTS.items():
                if part.startswith(old):
                    converted[layer + new + part[len(old) :]] = tensor
                    break
    return converted


def clip_config_from_state_dict(original: Mapping[str, Any]) -> Any:
    """The `CLIPConfig` of an OpenAI ViT CLIP, read from its tensor shapes as OpenAI's build_model does."""
    from transformers import CLIPConfig

    if "visual.proj" not in original:
        if any(key.startswith("visual.layer1.") for key in original):
            raise ModelLoadError("a ResNet CLIP (RN50 and the like), which sdstudio does not read; use ViT-L-14.pt")
        raise ModelLoadError("not an OpenAI CLIP model: it has no visual.proj")

    def shape(key: str) -> tuple[int, ...]:
        if key not in original:
            raise ModelLoadError(f"not an OpenAI CLIP model: it has no {key}")
        return tuple(original[key].shape)

    vision_width, _, _, patch_size = shape("visual.conv1.weight")
    grid = round((shape("visual.positional_embedding")[0] - 1) ** 0.5)
    text_width = shape("ln_final.weight")[0]
    return CLIPConfig(
        text_config=dict(
            vocab_size=shape("token_embedding.weight")[0],
            hidden_size=text_width,
            intermediate_size=shape("transformer.resblocks.0.mlp.c_fc.weight")[0],
            num_hidden_layers=_layer_count(original, ""),
            num_attention_heads=max(1, text_width // HEAD_WIDTH),
            max_position_embeddings=shape("positional_embedding")[0],
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=BOS_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID,
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=shape("visual.transformer.resblocks.0.mlp.c_fc.weight")[0],
            num_hidden_layers=_layer_count(original, "visual."),
            num_attention_heads=max(1, vision_width // HEAD_WIDTH),
            image_size=grid * patch_size,
            patch_size=patch_size,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        ),
        projection_dim=shape("text_projection")[1],
    )


def _layer_count(original: Mapping[str, Any], tower: str) -> int:
    pattern = re.compile(rf"^{re.escape(tower)}transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$")
    return len({match.group(1) for key in original if (match := pattern.match(key))})


def openai_clip_tensors(path: Path) -> dict[str, Any]:
    """The tensors of an OpenAI CLIP file: a TorchScript archive (read inertly) or a plain state dict."""
    from sdstudio.models.state_dict import load_state_dict
    from sdstudio.models.torchscript_archive import is_torchscript_archive, read_torchscript_tensors

    return read_torchscript_tensors(path) if is_torchscript_archive(path) else load_state_dict(path)


def read_openai_clip(path: Path) -> tuple[Any, Any]:
    """(CLIPModel, CLIPImageProcessor) of an OpenAI CLIP file; nothing in the file runs."""
    from transformers import CLIPImageProcessor, CLIPModel

    original = openai_clip_tensors(path)
    try:
        config = clip_config_from_state_dict(original)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path.name}: {exc}") from None
    model = load_converted(path, CLIPModel, config, transformers_clip_state_dict(original))
    size = config.vision_config.image_size
    # CLIPImageProcessor's defaults are OpenAI's preprocess: bicubic resize, center crop, CLIP's mean and std.
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model.eval(), image_processor
