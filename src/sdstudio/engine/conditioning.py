"""Prompt encoders the engine can use: adapters from text encoders to `StepConditioning`.

`PlainClipEncoder` encodes each prompt once through a CLIP text encoder, 77 tokens, no
emphasis or schedules: what `diffusers.StableDiffusionPipeline` does, used by the
benchmark for a like-for-like comparison and as the fallback when the prompt layer's
encoder is not present. Clip skip follows A1111: take the hidden state `clip_skip`
layers from the end, then apply the final layer norm.

`encoder_for_checkpoint` picks the prompt layer's A1111 encoder (emphasis, BREAK,
schedules, AND, embeddings) when available.
"""

from __future__ import annotations

from typing import Any

import torch

from sdstudio.engine.sampling import FixedConditioning


class PlainClipEncoder:
    """One CLIP pass per distinct prompt, padded to 77 tokens (diffusers' behaviour)."""

    def __init__(self, text_encoder, tokenizer, max_length: int = 77):
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.max_length = max_length

    def embed(self, texts: list[str], clip_skip: int = 1) -> torch.Tensor:
        """[N, 77, D] hidden states for the texts."""
        ids = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt").input_ids
        device = next(self.text_encoder.parameters()).device
        with torch.no_grad():
            if clip_skip <= 1:
                return self.text_encoder(ids.to(device))[0].float()
            out = self.text_encoder(ids.to(device), output_hidden_states=True)
            hidden = out.hidden_states[-clip_skip]
            return self.text_encoder.text_model.final_layer_norm(hidden).float()

    def encode(self, prompts: list[str], negative_prompts: list[str], steps: int, clip_skip: int, width: int, height: int) -> FixedConditioning:
        """Conditioning for a batch; identical prompts are encoded once."""
        unique = list(dict.fromkeys([*prompts, *negative_prompts]))
        table = dict(zip(unique, self.embed(unique, clip_skip)))
        cond = torch.stack([table[p] for p in prompts])
        uncond = torch.stack([table[n] for n in negative_prompts])
        return FixedConditioning(cond, uncond)


def encoder_for_checkpoint(loaded: Any, paths: Any = None):
    """The best available encoder for a LoadedCheckpoint (prompt layer's, else plain CLIP)."""
    try:
        from sdstudio.engine.prompt_adapter import PromptLayerEncoder
    except ImportError:
        PromptLayerEncoder = None  # noqa: N806
    if PromptLayerEncoder is not None:
        return PromptLayerEncoder.for_checkpoint(loaded, paths)
    from sdstudio.prompts.tokenizer import clip_tokenizer

    text_encoder = getattr(loaded, "text_encoder", None)
    if text_encoder is None:
        encoders = getattr(loaded, "text_encoders", None) or []
        text_encoder = encoders[0] if encoders else None
    if text_encoder is None:
        from sdstudio.errors import ModelLoadError

        raise ModelLoadError("the checkpoint has no text encoder the engine can use")
    return PlainClipEncoder(text_encoder, clip_tokenizer("sd1"))
