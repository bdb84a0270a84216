"""The A1111 prompt language: parser, schedules, tokenizer, conditioning, embeddings, styles.

Only light modules are imported here; torch/transformers-based parts (conditioning,
embeddings) are imported from their own modules.
"""

from sdstudio.prompts.tokenizer import clip_tokenizer, tokenize

__all__ = ["clip_tokenizer", "tokenize"]
