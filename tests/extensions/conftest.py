"""LoRA file builders and a probe over the tiny random UNet / CLIP text encoder (tiny_models.py) for the LoRA tests."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import tiny_clip, tiny_unet


class Probe:
    """Fixed inputs; `run()` gives the UNet and text-encoder outputs a user's image depends on."""

    def __init__(self, unet, text_encoder):
        self.unet, self.text_encoder = unet, text_encoder
        g = torch.Generator().manual_seed(123)
        self.latents = torch.randn(1, 4, 8, 8, generator=g)
        self.ids = torch.tensor([[49406, 320, 1125, 539, 49407] + [49407] * 72])

    @torch.no_grad()
    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.text_encoder(self.ids)[0]
        eps = self.unet(self.latents, torch.tensor([500]), encoder_hidden_states=hidden).sample
        return hidden, eps


# The modules the builder puts networks on: (kohya name, diffusers path)
LINEAR_TARGETS = [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
]
CONV_TARGETS = ["down_blocks.0.attentions.0.proj_in", "down_blocks.1.resnets.0.conv1"]  # 1x1 and 3x3 (LoCon)
TE_TARGETS = ["encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc1"]


def module_path(model, kohya: str) -> str:
    """The module a kohya name means; transformers 5 CLIP has no `text_model.` level, kohya names do."""
    for path, _ in model.named_modules():
        if path.replace(".", "_") in (kohya, kohya.removeprefix("text_model_")):
            return path
    raise KeyError(kohya)


def kohya_lora_tensors(
    unet, text_encoder, rank: int = 4, alpha: float = 2.0, seed: int = 0, strength: float = 0.3
) -> dict[str, torch.Tensor]:
    """A kohya-layout LoRA (lora_unet_/lora_te_, lora_down/lora_up/alpha) incl. LoCon 3x3 for the tiny models."""
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}

    def add(prefix: str, path: str, module):
        key = prefix + path.replace(".", "_")
        if isinstance(module, torch.nn.Conv2d):
            down = torch.randn(rank, module.in_channels, *module.kernel_size, generator=g) * strength
            up = torch.randn(module.out_channels, rank, 1, 1, generator=g) * strength
        else:
            down = torch.randn(rank, module.in_features, generator=g) * strength
            up = torch.randn(module.out_features, rank, generator=g) * strength
        tensors[key + ".lora_down.weight"] = down
        tensors[key + ".lora_up.weight"] = up
        tensors[key + ".alpha"] = torch.tensor(alpha)

    for path in LINEAR_TARGETS + CONV_TARGETS:
        add("lora_unet_", path, unet.get_submodule(path))
    for path in TE_TARGETS:
        real = ("text_model." + path) if hasattr(text_encoder, "text_model") else path
        tensors_before = len(tensors)
        add("lora_te_", "text_model." + path, text_encoder.get_submodule(real))
        assert len(tensors) == tensors_before + 3
    return tensors


def write_lora(folder, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


@pytest.fixture
def models():
    unet, te = tiny_unet(seed=0), tiny_clip(seed=1)
    return unet, te, Probe(unet, te)


@pytest.fixture
def lora_dir(tmp_path):
    return tmp_path / "models" / "Lora"
