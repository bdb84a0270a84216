"""LoRA / LyCORIS networks: read A1111/kohya/diffusers files, apply them per job, list them.

Public API (what the engine, server and UI use):
`LoraLibrary`, `LoraBatchHook` (the engine's batch hook), `LoraActivation`, `LoraReport`, `activations_from_prompt`,
`lora_applied`, `list_loras`, `lora_card`, `format_lora_hashes`, `parse_lora_hashes`.
"""

from sdstudio.extensions.lora.library import (
    LoraActivation,
    LoraBatchHook,
    LoraInfotext,
    LoraLibrary,
    LoraReport,
    activations_from_prompt,
    format_lora_hashes,
    list_loras,
    lora_applied,
    lora_card,
    lora_json,
    parse_lora_hashes,
)

__all__ = [
    "LoraBatchHook",
    "LoraInfotext",
    "LoraActivation",
    "LoraLibrary",
    "LoraReport",
    "activations_from_prompt",
    "format_lora_hashes",
    "list_loras",
    "lora_applied",
    "lora_card",
    "lora_json",
    "parse_lora_hashes",
]
