"""Which module of a loaded model a LoRA key names.

kohya-ss names a module by its path with "." replaced by "_" under a prefix
(`lora_unet_`, `lora_te_`, `lora_te1_`, `lora_te2_`). For the UNet the path is either the
diffusers one (SD1/SD2 files from sd-scripts: `lora_unet_down_blocks_0_attentions_0_proj_in`)
or the original LDM one (SDXL files and many LyCORIS files:
`lora_unet_input_blocks_1_1_proj_in`), so both spellings are indexed. The LDM path of each
diffusers module comes from `sdstudio.models.ldm_names`, the naming the model saver writes.
"""

from __future__ import annotations

import re

import torch

from sdstudio.models.ldm_names import ldm_unet_module_names


def kohya_name(path: str) -> str:
    """A module path as kohya writes it in a key (dots become underscores)."""
    return path.replace(".", "_")


class ModuleIndex:
    """Looks up a model's modules by kohya name (diffusers or LDM spelling) or by dotted path."""

    def __init__(self, model: torch.nn.Module, ldm_names: dict[str, str] | None = None):
        self.model = model
        self.modules: dict[str, torch.nn.Module] = {}
        self.by_kohya: dict[str, str] = {}
        self.dotted_aliases: dict[str, str] = {}
        for name, module in model.named_modules():
            if not name or not _has_weight(module):
                continue
            self.modules[name] = module
            self.by_kohya[kohya_name(name)] = name
        for name, ldm in (ldm_names or {}).items():
            if name in self.modules:
                self.by_kohya.setdefault(kohya_name(ldm), name)

    @classmethod
    def for_text_encoder(cls, encoder: torch.nn.Module) -> ModuleIndex:
        """Index a transformers CLIP text model; kohya writes its paths from `text_model.` down.

        transformers 5 puts CLIPTextModel's layers at the top (`encoder.layers.0...`), older
        versions under `text_model.`; kohya files always say `text_model_encoder_layers_0_...`.
        """
        index = cls(encoder)
        if not hasattr(encoder, "text_model"):
            for name in index.modules:
                index.by_kohya.setdefault(kohya_name("text_model." + name), name)
                index.dotted_aliases["text_model." + name] = name
        return index

    @classmethod
    def for_unet(cls, unet: torch.nn.Module) -> ModuleIndex:
        """Index with the LDM spellings too (when the model has diffusers' UNet block layout)."""
        try:
            ldm = ldm_unet_module_names(unet)
        except (AttributeError, TypeError):
            ldm = {}
        return cls(unet, ldm)

    def resolve(self, key: str) -> str | None:
        """The module path for a kohya-style name or a dotted path; None when the model has no such module."""
        if key in self.modules:
            return key
        if key in self.dotted_aliases:
            return self.dotted_aliases[key]
        return self.by_kohya.get(key) or self.by_kohya.get(kohya_name(key))


def _has_weight(module: torch.nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), torch.Tensor)


# diffusers' older attention-processor LoRA names -> the module they adapt.
_PROCESSOR_NAMES = [
    (re.compile(r"\.processor\.(to_[qkv])_lora$"), r".\1"),
    (re.compile(r"\.processor\.to_out_lora$"), r".to_out.0"),
    (re.compile(r"\.processor\.(add_[qkv]_proj)_lora$"), r".\1"),
]


def normalise_dotted(path: str) -> str:
    """Module path from diffusers' processor-style LoRA names (`attn1.processor.to_q_lora` -> `attn1.to_q`)."""
    for pattern, replacement in _PROCESSOR_NAMES:
        path = pattern.sub(replacement, path)
    return path
