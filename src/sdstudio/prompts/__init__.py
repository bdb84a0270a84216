"""The A1111 prompt language: parser, schedules, tokenizer, conditioning, embeddings, styles.

The parser and tokenizer are imported here (they need only lark, ftfy and regex). The
torch-based parts are imported on first use of their names, so `import sdstudio.prompts`
stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sdstudio.prompts.parser import parse_composable_prompt, parse_prompt_attention, prompt_schedules
from sdstudio.prompts.tokenizer import clip_tokenizer, tokenize

if TYPE_CHECKING:  # the lazy names' types, for type checkers only (importing them here would load torch)
    from sdstudio.prompts.conditioning import Conditioning as Conditioning
    from sdstudio.prompts.conditioning import PromptConditioner as PromptConditioner
    from sdstudio.prompts.conditioning import PromptEncoder as PromptEncoder
    from sdstudio.prompts.conditioning import ScheduledConditioning as ScheduledConditioning
    from sdstudio.prompts.conditioning import build_scheduled_conditioning as build_scheduled_conditioning
    from sdstudio.prompts.conditioning import sdxl_time_ids as sdxl_time_ids
    from sdstudio.prompts.embeddings import Embedding as Embedding
    from sdstudio.prompts.embeddings import EmbeddingDatabase as EmbeddingDatabase
    from sdstudio.prompts.extra_networks import ExtraNetworkParams as ExtraNetworkParams
    from sdstudio.prompts.extra_networks import extract_extra_networks as extract_extra_networks
    from sdstudio.prompts.extra_networks import read_lora_tag as read_lora_tag
    from sdstudio.prompts.styles import PromptStyle as PromptStyle
    from sdstudio.prompts.styles import StyleDatabase as StyleDatabase

_LAZY = {
    "Conditioning": "sdstudio.prompts.conditioning",
    "PromptConditioner": "sdstudio.prompts.conditioning",
    "PromptEncoder": "sdstudio.prompts.conditioning",
    "ScheduledConditioning": "sdstudio.prompts.conditioning",
    "build_scheduled_conditioning": "sdstudio.prompts.conditioning",
    "sdxl_time_ids": "sdstudio.prompts.conditioning",
    "Embedding": "sdstudio.prompts.embeddings",
    "EmbeddingDatabase": "sdstudio.prompts.embeddings",
    "ExtraNetworkParams": "sdstudio.prompts.extra_networks",
    "extract_extra_networks": "sdstudio.prompts.extra_networks",
    "read_lora_tag": "sdstudio.prompts.extra_networks",
    "PromptStyle": "sdstudio.prompts.styles",
    "StyleDatabase": "sdstudio.prompts.styles",
}

__all__ = [
    "clip_tokenizer",
    "parse_composable_prompt",
    "parse_prompt_attention",
    "prompt_schedules",
    "tokenize",
    *_LAZY,
]


def __getattr__(name: str) -> object:
    """Import torch-based names on first access (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdstudio.prompts' has no attribute {name!r}")
