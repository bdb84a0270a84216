"""The bundled tiny model's architecture, written as an original LDM inference config.

The config is an LDM yaml dict (like CompVis' v1-inference.yaml with smaller numbers); the
diffusers components are derived from it with diffusers' own single-file helpers
(`create_unet_diffusers_config_from_ldm`, `create_vae_diffusers_config_from_ldm`), the same
functions the model manager's loader uses, so the shipped file is an ordinary SD1-layout
checkpoint and nothing about it is special-cased at load time.

Sizes are chosen for 2 CPU cores: 64x64 RGB images, an f=4 VAE (16x16x4 latents), a UNet of a
few million parameters, and a 2-layer CLIP text transformer over the full CLIP BPE vocabulary
(the 49408-row token embedding dominates the file, so the hidden size is kept small).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

IMAGE_SIZE = 64
VOCAB_SIZE = 49408
MAX_POSITIONS = 77
BOS_ID = 49406
EOS_ID = 49407

# SD1's noise schedule (v1-inference.yaml: linear_start 0.00085, linear_end 0.012, 1000 steps,
# "scaled_linear" in diffusers), so every A1111 sampler and schedule applies unchanged.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}


def tiny_ldm_config(
    model_channels: int = 32,
    channel_mult: tuple[int, ...] = (1, 2, 2),
    num_res_blocks: int = 1,
    attention_resolutions: tuple[int, ...] = (2, 4),
    num_head_channels: int = 32,
    transformer_depth: int = 1,
    text_hidden_size: int = 128,
    text_layers: int = 2,
    text_heads: int = 2,
    text_intermediate_size: int = 512,
    vae_ch: int = 32,
    vae_ch_mult: tuple[int, ...] = (1, 2, 2),
    vae_num_res_blocks: int = 1,
    scale_factor: float = 1.0,
) -> dict[str, Any]:
    """The LDM yaml (as a dict) describing the tiny model; defaults are the shipped sizes.

    GroupNorm in both the LDM and diffusers blocks uses 32 groups, so channel counts are
    multiples of 32. `attention_resolutions` are LDM downsampling rates (1 = full latent size).
    """
    latent_size = IMAGE_SIZE // 2 ** (len(vae_ch_mult) - 1)
    return {
        "model": {
            "base_learning_rate": 1.0e-04,
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": SCHEDULER_CONFIG["beta_start"],
                "linear_end": SCHEDULER_CONFIG["beta_end"],
                "num_timesteps_cond": 1,
                "log_every_t": 200,
                "timesteps": SCHEDULER_CONFIG["num_train_timesteps"],
                "first_stage_key": "jpg",
                "cond_stage_key": "txt",
                "image_size": latent_size,
                "channels": 4,
                "cond_stage_trainable": True,
                "conditioning_key": "crossattn",
                "monitor": "val/loss_simple_ema",
                "scale_factor": float(scale_factor),
                "use_ema": False,
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "image_size": latent_size,
                        "in_channels": 4,
                        "out_channels": 4,
                        "model_channels": model_channels,
                        "attention_resolutions": list(attention_resolutions),
                        "num_res_blocks": num_res_blocks,
                        "channel_mult": list(channel_mult),
                        "num_head_channels": num_head_channels,
                        "use_spatial_transformer": True,
                        "use_linear_in_transformer": True,
                        "transformer_depth": transformer_depth,
                        "context_dim": text_hidden_size,
                        "use_checkpoint": False,
                        "legacy": False,
                    },
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder.AutoencoderKL",
                    "params": {
                        "embed_dim": 4,
                        "monitor": "val/rec_loss",
                        "ddconfig": {
                            "double_z": True,
                            "z_channels": 4,
                            "resolution": IMAGE_SIZE,
                            "in_channels": 3,
                            "out_ch": 3,
                            "ch": vae_ch,
                            "ch_mult": list(vae_ch_mult),
                            "num_res_blocks": vae_num_res_blocks,
                            "attn_resolutions": [],
                            "dropout": 0.0,
                        },
                        "lossconfig": {"target": "torch.nn.Identity"},
                    },
                },
                "cond_stage_config": {
                    "target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                    "params": {
                        # Read by sdstudio's loader; the other sizes come from the state dict's shapes.
                        "num_attention_heads": text_heads,
                        "hidden_size": text_hidden_size,
                        "num_hidden_layers": text_layers,
                        "intermediate_size": text_intermediate_size,
                    },
                },
            },
        }
    }


def micro_ldm_config() -> dict[str, Any]:
    """A very small variant for tests (seconds per training step batch)."""
    return tiny_ldm_config(
        model_channels=32,
        channel_mult=(1, 1),
        attention_resolutions=(2,),
        text_hidden_size=32,
        text_layers=1,
        text_heads=1,
        text_intermediate_size=64,
        vae_ch=32,
        vae_ch_mult=(1, 1, 1),
    )


@dataclass
class TinyComponents:
    """The three trainable SD components built from one LDM config."""

    config: dict[str, Any]
    vae: Any
    text_encoder: Any
    unet: Any

    @property
    def scale_factor(self) -> float:
        return float(self.config["model"]["params"]["scale_factor"])


def unet_config_from_ldm(config: dict[str, Any]) -> dict[str, Any]:
    """diffusers UNet2DConditionModel config derived with diffusers' LDM helper."""
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm

    latent_size = config["model"]["params"]["unet_config"]["params"]["image_size"]
    vae_factor = 2 ** (len(config["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["ch_mult"]) - 1)
    return create_unet_diffusers_config_from_ldm(config, {}, image_size=latent_size * vae_factor)


def vae_config_from_ldm(config: dict[str, Any]) -> dict[str, Any]:
    """diffusers AutoencoderKL config derived with diffusers' LDM helper."""
    from diffusers.loaders.single_file_utils import create_vae_diffusers_config_from_ldm

    resolution = config["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["resolution"]
    return create_vae_diffusers_config_from_ldm(config, {}, image_size=resolution)


def text_encoder_config_from_ldm(config: dict[str, Any]):
    """transformers CLIPTextConfig for the yaml's cond_stage_config sizes (SD1 CLIP otherwise)."""
    from transformers import CLIPTextConfig

    params = config["model"]["params"]["cond_stage_config"].get("params", {}) or {}
    hidden = int(params.get("hidden_size", 768))
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=int(params.get("intermediate_size", 4 * hidden)),
        num_hidden_layers=int(params.get("num_hidden_layers", 12)),
        num_attention_heads=int(params.get("num_attention_heads", max(1, hidden // 64))),
        max_position_embeddings=MAX_POSITIONS,
        hidden_act="quick_gelu",
        projection_dim=hidden,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=1,
    )


def build_components(config: dict[str, Any], seed: int = 0) -> TinyComponents:
    """Fresh randomly initialised VAE, text encoder and UNet for `config` (deterministic per seed)."""
    import warnings

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    config = copy.deepcopy(config)
    # diffusers and transformers initialise weights from the global generator (no generator
    # argument): seed a fork of it, so the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.simplefilter("ignore")  # diffusers' deprecation notes about image_size
        vae = AutoencoderKL(**vae_config_from_ldm(config))
        unet = UNet2DConditionModel(**unet_config_from_ldm(config))
        text_encoder = CLIPTextModel(text_encoder_config_from_ldm(config))
    return TinyComponents(config=config, vae=vae, text_encoder=text_encoder, unet=unet)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())
