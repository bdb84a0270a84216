"""Saving diffusers components back to a single-file checkpoint in the original LDM layout.

The key mapping is derived from the component's config (levels, resnets per level,
which levels have attention), so it holds for any UNet/VAE expressible in an LDM yaml,
the tiny ones included; it is the inverse of diffusers' `convert_ldm_*_checkpoint`, and
tests check save -> load returns the same tensors bit for bit. `ldm_yaml_for` writes the
LDM config that describes a non-standard model so the loader can rebuild it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from sdstudio.config import atomic_write_bytes
from sdstudio.errors import InvalidRequest
from sdstudio.models.detect import SD1_TEXT_PREFIX, SD2_TEXT_PREFIX, SDXL_PREFIX, UNET_PREFIX, VAE_PREFIX
from sdstudio.models.ldm_names import ldm_unet_module_names
from sdstudio.models.loader import hf_text_model_state_dict

if TYPE_CHECKING:
    # From their defining modules: mypy reads the top-level diffusers names as its no-torch placeholders.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel


def unet_key_map(unet: UNet2DConditionModel) -> dict[str, str]:
    """diffusers UNet2DConditionModel key -> LDM `model.diffusion_model.*` key."""
    layers = unet.config["layers_per_block"]
    if not isinstance(layers, int) and len(set(layers)) != 1:
        raise InvalidRequest("unet", "LDM layout needs the same number of resnets per level")
    modules = ldm_unet_module_names(unet)
    mapping: dict[str, str] = {}
    for key in unet.state_dict():
        module, _, parameter = key.rpartition(".")
        if module not in modules:
            raise InvalidRequest("unet", f"no LDM name for UNet weight {key}")
        mapping[key] = f"{UNET_PREFIX}{modules[module]}.{parameter}"
    return mapping


_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = {"conv_norm_out": "norm_out"}


def vae_key_map(vae: AutoencoderKL) -> dict[str, str]:
    """diffusers AutoencoderKL key -> LDM `first_stage_model.*` key."""
    levels = len(vae.config["block_out_channels"])
    mapping: dict[str, str] = {}
    for key in vae.state_dict():
        parts = key.split(".")
        side = parts[0]
        ldm: str | None = None
        if side in ("quant_conv", "post_quant_conv"):
            ldm = key
        elif parts[1] in ("conv_in", "conv_out"):
            ldm = key
        elif parts[1] == "conv_norm_out":
            ldm = f"{side}.norm_out.{parts[2]}"
        elif parts[1] in ("down_blocks", "up_blocks"):
            level = int(parts[2])
            ldm_level = level if parts[1] == "down_blocks" else levels - 1 - level
            group = "down" if parts[1] == "down_blocks" else "up"
            if parts[3] == "resnets":
                name = _VAE_RESNET.get(parts[5], parts[5])
                ldm = f"{side}.{group}.{ldm_level}.block.{parts[4]}.{name}.{parts[6]}"
            elif parts[3] in ("downsamplers", "upsamplers"):
                ldm = f"{side}.{group}.{ldm_level}.{'downsample' if group == 'down' else 'upsample'}.conv.{parts[6]}"
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                name = _VAE_RESNET.get(parts[4], parts[4])
                ldm = f"{side}.mid.block_{int(parts[3]) + 1}.{name}.{parts[5]}"
            elif parts[2] == "attentions":
                rest = ".".join(parts[4:])
                for new, old in _VAE_ATTENTION.items():
                    if rest.startswith(new + "."):
                        ldm = f"{side}.mid.attn_1.{old}{rest[len(new) :]}"
                        break
        if ldm is None:
            raise InvalidRequest("vae", f"no LDM name for VAE weight {key}")
        mapping[key] = VAE_PREFIX + ldm
    return mapping


def _vae_tensor(ldm_key: str, tensor: torch.Tensor) -> torch.Tensor:
    # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
    if ".mid.attn_1." in ldm_key and ldm_key.endswith("weight") and tensor.ndim == 2:
        return tensor[:, :, None, None]
    return tensor


_OPEN_CLIP_RENAMES = (  # HF CLIP name fragment -> OpenCLIP fragment (inverse of diffusers' table)
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    (".mlp.fc1.", ".mlp.c_fc."),
    (".mlp.fc2.", ".mlp.c_proj."),
    (".self_attn.out_proj.", ".attn.out_proj."),
)


def open_clip_state_dict(text_model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """An HF CLIP text model's weights in OpenCLIP layout (q/k/v fused into in_proj)."""
    weights = hf_text_model_state_dict(text_model)
    out: dict[str, torch.Tensor] = {}
    tops = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    for key, value in weights.items():
        if key in tops:
            out[prefix + tops[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key.endswith("position_ids"):
            continue
        elif ".self_attn.q_proj." in key:
            base = key.replace(".self_attn.q_proj.", ".self_attn.{}.")
            fused = torch.cat([weights[base.format(p)] for p in ("q_proj", "k_proj", "v_proj")], dim=0)
            name = base.replace(".self_attn.{}.", ".attn.in_proj_")
            for old, new in _OPEN_CLIP_RENAMES:
                name = name.replace(old, new)
            out[prefix + name] = fused
        elif ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        else:
            name = key
            for old, new in _OPEN_CLIP_RENAMES:
                name = name.replace(old, new)
            out[prefix + name] = value
    return out


def ldm_state_dict(
    *,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: torch.nn.Module | None = None,
    text_encoder_2: torch.nn.Module | None = None,
    family: str = "sd1",
) -> dict[str, torch.Tensor]:
    """All components' weights under their LDM single-file names."""
    out: dict[str, torch.Tensor] = {}
    unet_map = unet_key_map(unet)
    for key, value in unet.state_dict().items():
        out[unet_map[key]] = value
    vae_map = vae_key_map(vae)
    for key, value in vae.state_dict().items():
        out[vae_map[key]] = _vae_tensor(vae_map[key], value)
    if family == "sd1" and text_encoder is not None:
        for key, value in hf_text_model_state_dict(text_encoder).items():
            out[SD1_TEXT_PREFIX + key] = value
    elif family == "sd2" and text_encoder is not None:
        out.update(open_clip_state_dict(text_encoder, SD2_TEXT_PREFIX))
    elif family == "sdxl":
        if text_encoder is not None:
            for key, value in hf_text_model_state_dict(text_encoder).items():
                out[SDXL_PREFIX + "0.transformer." + key] = value
        if text_encoder_2 is not None:
            out.update(open_clip_state_dict(text_encoder_2, SDXL_PREFIX + "1.model."))
    elif family == "sdxl_refiner" and text_encoder_2 is not None:
        out.update(open_clip_state_dict(text_encoder_2, SDXL_PREFIX + "0.model."))
    return out


def save_checkpoint(
    path: str | Path,
    *,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: torch.nn.Module | None = None,
    text_encoder_2: torch.nn.Module | None = None,
    family: str = "sd1",
    metadata: dict[str, Any] | None = None,
    yaml_text: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a single-file LDM-layout .safetensors (atomically), plus NAME.yaml when given."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidRequest("path", "checkpoints are saved as .safetensors")
    tensors = ldm_state_dict(
        unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, family=family
    )
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in tensors.items()
    }
    text_metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, save(tensors, metadata=text_metadata or None))
    if yaml_text is not None:
        atomic_write_bytes(path.with_suffix(".yaml"), yaml_text.encode("utf-8"))
    return path


def ldm_yaml_for(
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    *,
    scale_factor: float,
    text_heads: int | None = None,
    prediction_type: str = "epsilon",
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> str:
    """An original-LDM inference yaml describing these (possibly non-standard) SD1-style components."""
    blocks = list(unet_config["down_block_types"])
    attention_levels = [i for i, b in enumerate(blocks) if "CrossAttn" in b]
    channels = list(unet_config["block_out_channels"])
    base = channels[0]
    head_dim = unet_config["attention_head_dim"]
    head_dim = head_dim[0] if isinstance(head_dim, (list, tuple)) else head_dim
    layers = unet_config["layers_per_block"]
    depth = unet_config["transformer_layers_per_block"]
    depth = depth[0] if isinstance(depth, (list, tuple)) else depth
    unet_params: dict[str, Any] = {
        "image_size": int(unet_config["sample_size"]),
        "in_channels": int(unet_config["in_channels"]),
        "out_channels": int(unet_config["out_channels"]),
        "model_channels": base,
        "attention_resolutions": [2**i for i in attention_levels],
        "num_res_blocks": int(layers if isinstance(layers, int) else layers[0]),
        "channel_mult": [c // base for c in channels],
        # diffusers' "attention_head_dim" of SD1 configs is really the number of heads
        "num_heads": int(head_dim),
        "transformer_depth": int(depth),
        "context_dim": int(unet_config["cross_attention_dim"]),
        "use_linear_in_transformer": bool(unet_config["use_linear_projection"]),
        "legacy": False,
    }
    vae_channels = list(vae_config["block_out_channels"])
    ddconfig = {
        "double_z": True,
        "z_channels": int(vae_config["latent_channels"]),
        "resolution": int(vae_config["sample_size"]),
        "in_channels": int(vae_config["in_channels"]),
        "out_ch": int(vae_config["out_channels"]),
        "ch": vae_channels[0],
        "ch_mult": [c // vae_channels[0] for c in vae_channels],
        "num_res_blocks": int(vae_config["layers_per_block"]),
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    cond_params = {"num_attention_heads": int(text_heads)} if text_heads else {}
    params: dict[str, Any] = {
        "linear_start": beta_start,
        "linear_end": beta_end,
        "timesteps": num_train_timesteps,
        "image_size": int(unet_config["sample_size"]),
        "channels": int(vae_config["latent_channels"]),
        "conditioning_key": "hybrid" if unet_config["in_channels"] == 9 else "crossattn",
        "scale_factor": float(scale_factor),
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet_params},
        "first_stage_config": {
            "target": "ldm.models.autoencoder.AutoencoderKL",
            "params": {"embed_dim": int(vae_config["latent_channels"]), "ddconfig": ddconfig},
        },
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder", "params": cond_params},
    }
    if prediction_type == "v_prediction":
        params["parameterization"] = "v"
    config = {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text
