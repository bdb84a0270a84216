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


def _architecture(loaded: Any, encoders: list) -> str:
    """The prompt layer's architecture key for a LoadedCheckpoint ("sd1", "sd2", "sdxl", ...)."""
    for name in ("architecture", "family", "model_type", "kind"):
        value = getattr(loaded, name, None)
        value = getattr(value, "value", value)  # enums
        if isinstance(value, str) and value:
            key = value.lower().replace("-", "").replace(" ", "").replace(".", "")
            if "refiner" in key:
                return "sdxl_refiner"
            if "xl" in key:
                return "sdxl"
            if key.startswith("sd2") or key.startswith("v2") or "sd21" in key or "sd20" in key:
                return "sd2"
            if key.startswith("sd1") or key.startswith("v1") or key.startswith("sd15"):
                return "sd1"
    return "sdxl" if len(encoders) == 2 else "sd1"


def text_encoders_of(loaded: Any) -> list:
    """The checkpoint's text encoders in order (SDXL: CLIP-L then bigG)."""
    encoders = getattr(loaded, "text_encoders", None)
    if encoders:
        return list(encoders)
    encoders = [getattr(loaded, name, None) for name in ("text_encoder", "text_encoder_2")]
    return [e for e in encoders if e is not None]


def encoder_for_checkpoint(loaded: Any, paths: Any = None):
    """The prompt layer's A1111 encoder (emphasis, schedules, AND, embeddings) for a LoadedCheckpoint."""
    from sdstudio.prompts.conditioning import PromptConditioner, PromptEncoder
    from sdstudio.prompts.embeddings import EmbeddingDatabase

    encoders = text_encoders_of(loaded)
    if not encoders:
        from sdstudio.errors import ModelLoadError

        raise ModelLoadError("the checkpoint has no text encoder the engine can use")
    width = sum(int(e.get_input_embeddings().weight.shape[1]) for e in encoders)
    embeddings = EmbeddingDatabase(paths.folder("embedding"), expected_width=width) if paths is not None else None
    return PromptConditioner(PromptEncoder(encoders, architecture=_architecture(loaded, encoders), embeddings=embeddings))
