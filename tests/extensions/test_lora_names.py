"""The LDM names of UNet modules (for SDXL-style kohya keys, and the model saver) agree with diffusers' converter."""

from __future__ import annotations

import pytest
from tiny_models import sdxl_added_conditioning, tiny_unet

from sdstudio.models.ldm_names import ldm_unet_module_names


def _unets():
    sdxl_like = tiny_unet(
        seed=1,
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        use_linear_projection=True,
        **sdxl_added_conditioning(32),
    )
    return {"sd1-like": tiny_unet(seed=0), "sdxl-like": sdxl_like}


@pytest.fixture(scope="module")
def unets():
    return _unets()


def _ldm_state_dict(unet):
    names = ldm_unet_module_names(unet)
    out = {}
    for key, value in unet.state_dict().items():
        module, _, param = key.rpartition(".")
        out[f"model.diffusion_model.{names[module]}.{param}"] = value
    return out


@pytest.mark.parametrize("kind", ["sd1-like", "sdxl-like"])
def test_diffusers_converter_reads_the_ldm_names_back(unets, kind):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = unets[kind]
    converted = convert_ldm_unet_checkpoint(_ldm_state_dict(unet), dict(unet.config))
    assert set(converted) == set(unet.state_dict())
