"""Single-file checkpoints: detection, loading equals the source model, exact save/load round trip."""

from __future__ import annotations

import textwrap

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import (
    CHECKPOINT_UNET,
    CHECKPOINT_VAE,
    randomize,
    sdxl_added_conditioning,
    tiny_clip,
    tiny_unet,
    tiny_vae,
)

from sdstudio.errors import ModelLoadError
from sdstudio.models.loader import load_checkpoint
from sdstudio.models.saver import ldm_state_dict, ldm_yaml_for, save_checkpoint

TOKENS = torch.tensor([[49406, 320, 1125, 4496, 49407, 49407]])


def assert_same_outputs(loaded, unet, vae, encoders, context_dim, added=None):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, unet.config.in_channels, 8, 8, generator=generator)
    context = torch.randn(1, 5, context_dim, generator=generator)
    with torch.no_grad():
        kwargs = {"added_cond_kwargs": added} if added else {}
        assert (loaded.unet(x, 10, context, **kwargs).sample - unet(x, 10, context, **kwargs).sample).abs().max() < 1e-5
        image = torch.randn(1, 3, 32, 32, generator=generator)
        assert (
            loaded.vae(image, sample_posterior=False).sample - vae(image, sample_posterior=False).sample
        ).abs().max() < 1e-5
        for mine, theirs in zip(loaded.text_encoders, encoders):
            a = mine(TOKENS, output_hidden_states=True)
            b = theirs(TOKENS, output_hidden_states=True)
            assert (a.last_hidden_state - b.last_hidden_state).abs().max() < 1e-5
            assert (a.hidden_states[-2] - b.hidden_states[-2]).abs().max() < 1e-5


def sd_unet(**config):
    """The 64-wide-context UNet of the SD1/SD2 checkpoints here, with non-zero weights everywhere."""
    return randomize(tiny_unet(**CHECKPOINT_UNET, **config))


def checkpoint_vae():
    return randomize(tiny_vae(**CHECKPOINT_VAE))


def sd1_parts(in_channels=4):
    return sd_unet(in_channels=in_channels), checkpoint_vae(), randomize(tiny_clip(hidden=64))


def test_sd1_detected_loaded_and_equal(tmp_path):
    unet, vae, te = sd1_parts()
    path = save_checkpoint(
        tmp_path / "tiny.safetensors",
        unet=unet,
        vae=vae,
        text_encoder=te,
        yaml_text=ldm_yaml_for(unet.config, vae.config, scale_factor=0.5, text_heads=2),
    )
    loaded = load_checkpoint(path)
    assert loaded.architecture.name == "SD1" and loaded.prediction_type == "epsilon"
    assert loaded.vae_scaling_factor == 0.5
    assert_same_outputs(loaded, unet, vae, [te], 64)


def test_save_load_save_is_bit_exact(tmp_path):
    unet, vae, te = sd1_parts()
    first = save_checkpoint(
        tmp_path / "a.safetensors",
        unet=unet,
        vae=vae,
        text_encoder=te,
        yaml_text=ldm_yaml_for(unet.config, vae.config, scale_factor=0.5, text_heads=2),
    )
    loaded = load_checkpoint(first)
    second = save_checkpoint(
        tmp_path / "b.safetensors", unet=loaded.unet, vae=loaded.vae, text_encoder=loaded.text_encoder
    )
    a, b = load_file(first), load_file(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1") for k in a)
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in a
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in a


def test_saver_refuses_a_unet_the_ldm_layout_cannot_describe(tmp_path):
    from sdstudio.errors import InvalidRequest

    uneven = tiny_unet(layers_per_block=(1, 2), cross_attention_dim=64)
    _, vae, te = sd1_parts()
    with pytest.raises(InvalidRequest, match="unet.*same number of resnets"):
        save_checkpoint(tmp_path / "uneven.safetensors", unet=uneven, vae=vae, text_encoder=te)
    assert not (tmp_path / "uneven.safetensors").exists()


def test_outer_state_dict_wrapper_in_ckpt(tmp_path):
    unet, vae, te = sd1_parts()
    tensors = ldm_state_dict(unet=unet, vae=vae, text_encoder=te)
    path = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": tensors, "global_step": 10}, path)
    (tmp_path / "wrapped.yaml").write_text(ldm_yaml_for(unet.config, vae.config, scale_factor=0.5, text_heads=2))
    loaded = load_checkpoint(path)
    assert_same_outputs(loaded, unet, vae, [te], 64)


def test_inpainting_checkpoint_detected(tmp_path):
    unet, vae, te = sd1_parts(in_channels=9)
    path = save_checkpoint(
        tmp_path / "inpaint.safetensors",
        unet=unet,
        vae=vae,
        text_encoder=te,
        yaml_text=ldm_yaml_for(unet.config, vae.config, scale_factor=0.5, text_heads=2),
    )
    loaded = load_checkpoint(path)
    assert loaded.architecture.inpainting and loaded.unet.config.in_channels == 9
    assert_same_outputs(loaded, unet, vae, [te], 64)


def sd2_yaml(unet, vae, v: bool) -> str:
    text = ldm_yaml_for(unet.config, vae.config, scale_factor=0.5, prediction_type="v_prediction" if v else "epsilon")
    return text.replace("FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder")


@pytest.mark.parametrize("v", [True, False])
def test_sd2_openclip_layout(tmp_path, v):
    unet = sd_unet(use_linear_projection=True)
    vae = checkpoint_vae()
    te = randomize(tiny_clip(hidden=128, act="gelu"))
    path = save_checkpoint(
        tmp_path / "sd2.safetensors",
        unet=unet,
        vae=vae,
        text_encoder=te,
        family="sd2",
        yaml_text=sd2_yaml(unet, vae, v),
    )
    keys = load_file(path).keys()
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    loaded = load_checkpoint(path)
    assert loaded.architecture.family == "sd2"
    assert loaded.prediction_type == ("v_prediction" if v else "epsilon")
    assert loaded.architecture.name == ("SD2-v" if v else "SD2")
    assert_same_outputs(loaded, unet, vae, [te], 64)


SDXL_YAML = """
model:
  target: sgm.models.diffusion.DiffusionEngine
  params:
    scale_factor: 0.13025
    network_config:
      target: sgm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        adm_in_channels: {adm}
        num_classes: sequential
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [1]
        num_res_blocks: 1
        channel_mult: [1, 2]
        num_head_channels: 16
        use_linear_in_transformer: true
        transformer_depth: 1
        context_dim: 128
    first_stage_config:
      target: sgm.models.autoencoder.AutoencoderKLInferenceWrapper
      params:
        embed_dim: 4
        ddconfig: {{double_z: true, z_channels: 4, resolution: 32, in_channels: 3, out_ch: 3, ch: 32,
          ch_mult: [1, 1], num_res_blocks: 1, attn_resolutions: [], dropout: 0.0}}
"""


def test_sdxl_two_encoders_and_added_conditioning(tmp_path):
    from sdstudio.models.loader import load_checkpoint as load

    te1 = randomize(tiny_clip(hidden=64, heads=1))
    te2 = randomize(tiny_clip(hidden=64, heads=1, act="gelu", projection=32), seed=2)
    added_conditioning = sdxl_added_conditioning(32)  # pooled projection + 6 time ids x 8
    unet = randomize(
        tiny_unet(cross_attention_dim=128, attention_head_dim=(2, 4), use_linear_projection=True, **added_conditioning)
    )
    vae = checkpoint_vae()
    adm = added_conditioning["projection_class_embeddings_input_dim"]
    path = save_checkpoint(
        tmp_path / "xl.safetensors",
        unet=unet,
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        family="sdxl",
        yaml_text=textwrap.dedent(SDXL_YAML.format(adm=adm)),
    )
    loaded = load(path)
    assert loaded.architecture.name == "SDXL" and loaded.family == "sdxl"
    assert loaded.vae_scaling_factor == 0.13025
    generator = torch.Generator().manual_seed(1)
    added = {"text_embeds": torch.randn(1, 32, generator=generator), "time_ids": torch.randn(1, 6, generator=generator)}
    assert_same_outputs(loaded, unet, vae, [te1, te2], 128, added)
    a = te2(TOKENS)
    b = loaded.text_encoder_2(TOKENS)
    assert (a.text_embeds - b.text_embeds).abs().max() < 1e-5


def test_not_a_checkpoint_is_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion checkpoint"):
        load_checkpoint(path)
    corrupt = tmp_path / "broken.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelLoadError, match="broken.safetensors"):
        load_checkpoint(corrupt)
