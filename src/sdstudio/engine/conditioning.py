"""Prompt encoders the engine can use: adapters from text encoders to `StepConditioning`.

`PlainClipEncoder` encodes each prompt once through a CLIP text encoder, 77 tokens, no
emphasis or schedules: what `diffusers.StableDiffusionPipeline` does, used by the
benchmark for a like-for-like comparison. Clip skip follows A1111: take the hidden state
`clip_skip` layers from the end, then apply the final layer norm.

`encoder_for_checkpoint` builds the prompt layer's A1111 encoder (emphasis, BREAK,
schedules, AND, embeddings) over a loaded checkpoint's text encoders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch

from sdstudio.config import DataPaths
from sdstudio.engine.sampling import FixedConditioning
from sdstudio.errors import ModelLoadError
from sdstudio.models.loader import LoadedCheckpoint
from sdstudio.prompts.conditioning import PromptConditioner, PromptEncoder, skipped_layer_output
from sdstudio.prompts.embeddings import EmbeddingDatabase

if TYPE_CHECKING:
    from transformers import CLIPTextModel, PreTrainedModel, PreTrainedTokenizerBase


class PlainClipEncoder:
    """One CLIP pass per distinct prompt, padded to 77 tokens (diffusers' behaviour)."""

    def __init__(self, text_encoder: CLIPTextModel, tokenizer: PreTrainedTokenizerBase, max_length: int = 77) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """The one CLIP text encoder."""
        return [self.text_encoder]

    def clear_cache(self) -> None:
        """Nothing is cached."""

    def embed(self, texts: list[str], clip_skip: int = 1) -> torch.Tensor:
        """[N, 77, D] hidden states for the texts."""
        ids = self.tokenizer(
            texts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).input_ids
        device = next(self.text_encoder.parameters()).device
        with torch.no_grad():
            if clip_skip <= 1:
                last: torch.Tensor = self.text_encoder(ids.to(device))[0]
                return last.float()
            out = self.text_encoder(ids.to(device), output_hidden_states=True)
            hidden = skipped_layer_output(out.hidden_states, clip_skip)
            normed: torch.Tensor = self.text_encoder.final_layer_norm(hidden)  # transformers 5: no .text_model wrapper
            return normed.float()

    def encode(
        self,
        prompts: list[str],
        negative_prompts: list[str],
        steps: int,
        clip_skip: int,
        width: int,
        height: int,
        check_cancelled: Callable[[], None] | None = None,
    ) -> FixedConditioning:
        """Conditioning for a batch; identical prompts are encoded once (in one call: nothing to cancel between)."""
        unique = list(dict.fromkeys([*prompts, *negative_prompts]))
        table = dict(zip(unique, self.embed(unique, clip_skip)))
        cond = torch.stack([table[p] for p in prompts])
        uncond = torch.stack([table[n] for n in negative_prompts])
        return FixedConditioning(cond, uncond)


def text_encoders_of(loaded: LoadedCheckpoint) -> list[PreTrainedModel]:
    """The checkpoint's text encoders in order (SDXL: CLIP-L then bigG)."""
    return [e for e in (loaded.text_encoder, loaded.text_encoder_2) if e is not None]


def _token_embedding_width(encoder: PreTrainedModel) -> int:
    """The width of the encoder's token embeddings (what an embedding's vectors must match)."""
    weight = cast(
        torch.Tensor, encoder.get_input_embeddings().weight
    )  # torch types submodule attributes as Tensor | Module
    return int(weight.shape[1])


def encoder_for_checkpoint(loaded: LoadedCheckpoint, paths: DataPaths | None = None) -> PromptConditioner:
    """The prompt layer's A1111 encoder (emphasis, schedules, AND, embeddings) for a LoadedCheckpoint."""
    encoders = text_encoders_of(loaded)
    if not encoders:
        raise ModelLoadError("the checkpoint has no text encoder the engine can use")
    width = sum(_token_embedding_width(e) for e in encoders)
    embeddings = EmbeddingDatabase(paths.folder("embedding"), expected_width=width) if paths is not None else None
    return PromptConditioner(PromptEncoder(encoders, architecture=loaded.family, embeddings=embeddings))
