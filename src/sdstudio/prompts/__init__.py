"""The A1111 prompt language: parser, schedules, tokenizer, conditioning, embeddings, styles.

Only light modules are imported here; torch/transformers-based parts (conditioning,
embeddings) are imported from their own modules.
"""

from sdstudio.prompts.parser import parse_composable_prompt, parse_prompt_attention, prompt_schedules
from sdstudio.prompts.tokenizer import clip_tokenizer, tokenize

__all__ = [
    "clip_tokenizer",
    "parse_composable_prompt",
    "parse_prompt_attention",
    "prompt_schedules",
    "tokenize",
]
