"""A1111's BLIP file (Salesforce's `model_base_caption_capfilt_large.pth`) as a transformers BLIP captioner.

The file is a torch pickle holding `{"model": state_dict}` of Salesforce BLIP's `blip_decoder`:
a timm-style ViT (`visual_encoder.*`: patch_embed.proj, cls_token, pos_embed, blocks.N.{norm1,
attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm) and a BERT decoder with cross-attention
(`text_decoder.bert.*`, `text_decoder.cls.predictions.*`). transformers' `BlipForConditionalGeneration`
holds the same weights (Salesforce/blip-image-captioning-base was converted from this file):
the ViT keys are renamed as transformers' conversion script renames them and the decoder
keys are the same. It is read with the restricted unpickler (tensors only); the config comes
from the tensor shapes, with BLIP's fixed choices (64-wide heads, ViT LayerNorm eps 1e-6, BERT
eps 1e-12, GELU) and the tokenizer is BLIP's `init_tokenizer`: bert-base-uncased's WordPiece
vocabulary (shipped in sdstudio/assets/blip) plus `[DEC]` as the start token and `[ENC]`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from sdstudio.errors import ModelLoadError

A1111_BLIP_FILE = "model_base_caption_capfilt_large.pth"
"""The file A1111 downloads into models/BLIP."""

BERT_VOCAB_FILE = "bert-base-uncased-vocab.txt"
HEAD_WIDTH = 64  # BLIP's ViT-base/large and BERT-base all use 64-wide attention heads
VISION_LAYER_NORM_EPS = 1e-6  # BLIP's ViT: partial(nn.LayerNorm, eps=1e-6)
TEXT_LAYER_NORM_EPS = 1e-12  # BLIP's configs/med_config.json
DECODER_START_TOKEN = "[DEC]"
ENCODER_TOKEN = "[ENC]"

# Salesforce key -> transformers key (the renames of transformers' convert_blip_original_pytorch_to_hf.py).
_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
        (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
        (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
        (r"^visual_encoder\.norm\.", "vision_model.post_layernorm."),
        (r"^visual_encoder\.blocks\.(\d+)\.norm([12])\.", r"vision_model.encoder.layers.\1.layer_norm\2."),
        (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision_model.encoder.layers.\1.self_attn.qkv."),
        (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
        (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
        (r"^text_decoder\.(?!bert\.embeddings\.position_ids$)", "text_decoder."),  # the same, less a buffer
    )
)
_VISION_BLOCK = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.weight$")
_TEXT_LAYER = re.compile(r"^text_decoder\.bert\.encoder\.layer\.(\d+)\.attention\.self\.query\.weight$")


def transformers_blip_state_dict(original: Mapping[str, Any]) -> dict[str, Any]:
    """Salesforce BLIP captioner keys renamed to `BlipForConditionalGeneration`'s; other keys are left out."""
    converted = {}
    for key, tensor in original.items():
        for pattern, replacement in _RENAMES:
            if pattern.match(key):
                converted[pattern.sub(replacement, key)] = tensor
                break
    return converted


def blip_config_from_state_dict(original: Mapping[str, Any], tokenizer: Any) -> Any:
    """The `BlipConfig` of a Salesforce BLIP captioner, read from its tensor shapes and the tokenizer's ids."""
    from transformers import BlipConfig

    def shape(key: str) -> tuple[int, ...]:
        if key not in original:
            raise ModelLoadError(f"not a BLIP captioning checkpoint: it has no {key}")
        return tuple(original[key].shape)

    vision_width = shape("visual_encoder.cls_token")[-1]
    patch_size = shape("visual_encoder.patch_embed.proj.weight")[-1]
    grid = round((shape("visual_encoder.pos_embed")[1] - 1) ** 0.5)
    text_width = shape("text_decoder.bert.embeddings.word_embeddings.weight")[1]
    return BlipConfig(
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=shape("visual_encoder.blocks.0.mlp.fc1.weight")[0],
            num_hidden_layers=_count(original, _VISION_BLOCK),
            num_attention_heads=max(1, vision_width // HEAD_WIDTH),
            image_size=grid * patch_size,
            patch_size=patch_size,
            layer_norm_eps=VISION_LAYER_NORM_EPS,
            hidden_act="gelu",
        ),
        text_config=dict(
            vocab_size=shape("text_decoder.bert.embeddings.word_embeddings.weight")[0],
            hidden_size=text_width,
            encoder_hidden_size=shape("text_decoder.bert.encoder.layer.0.crossattention.self.key.weight")[1],
            intermediate_size=shape("text_decoder.bert.encoder.layer.0.intermediate.dense.weight")[0],
            num_hidden_layers=_count(original, _TEXT_LAYER),
            num_attention_heads=max(1, text_width // HEAD_WIDTH),
            max_position_embeddings=shape("text_decoder.bert.embeddings.position_embeddings.weight")[0],
            layer_norm_eps=TEXT_LAYER_NORM_EPS,
            hidden_act="gelu",
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.sep_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        projection_dim=text_width,
        image_text_hidden_size=text_width,
    )


def _count(original: Mapping[str, Any], layer_key: re.Pattern[str]) -> int:
    return len({match.group(1) for key in original if (match := layer_key.match(key))})


def blip_tokenizer() -> Any:
    """BLIP's tokenizer: bert-base-uncased plus `[DEC]` (start of a caption) and `[ENC]`, as BLIP's init_tokenizer."""
    from transformers import BertTokenizer

    text = resources.files("sdstudio.assets").joinpath("blip", BERT_VOCAB_FILE).read_text(encoding="utf-8")
    vocab = {token: index for index, token in enumerate(text.split("\n")[:-1])}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": DECODER_START_TOKEN})
    tokenizer.add_special_tokens({"additional_special_tokens": [ENCODER_TOKEN]})
    return tokenizer


def read_blip_checkpoint(path: Path) -> tuple[Any, Any]:
    """(BlipForConditionalGeneration, BlipProcessor) of a Salesforce BLIP captioner file; tensors only are read."""
    from transformers import BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from sdstudio.models.safe_pickle import safe_load

    loaded = safe_load(path)
    original = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    if not isinstance(original, dict):
        raise ModelLoadError(f"{path.name}: not a BLIP checkpoint (expected a dict with a 'model' state dict)")
    tokenizer = blip_tokenizer()
    try:
        config = blip_config_from_state_dict(original, tokenizer)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path.name}: {exc}") from None
    model = load_converted(path, BlipForConditionalGeneration, config, transformers_blip_state_dict(original))
    size = config.vision_config.image_size
    # BlipImageProcessor's defaults are BLIP's eval transform: bicubic resize to a square, CLIP's mean and std.
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": size, "width": size}), tokenizer=tokenizer
    )
    return model.eval(), processor


def load_converted(path: Path, model_class: Any, config: Any, state_dict: dict[str, Any]) -> Any:
    """`model_class` with `config` holding exactly `state_dict`; ModelLoadError naming `path` when weights are missing.

    (transformers would fill missing weights with random values, so they are refused.)
    """
    loaded: Any = model_class.from_pretrained(None, config=config, state_dict=state_dict, output_loading_info=True)
    model, info = loaded
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(
        str(entry[0] if isinstance(entry, tuple) else entry) for entry in info.get("mismatched_keys") or ()
    )
    if missing or mismatched:
        problem = (
            f"has no weights for {missing[0]}" if missing else f"has weights of the wrong shape for {mismatched[0]}"
        )
        raise ModelLoadError(f"{path.name}: {problem} ({len(missing) + len(mismatched)} in all)")
    return model
