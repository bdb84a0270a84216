"""A checkpoint without its NAME.yaml: the architecture is read from the weights, or the error says why not."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from tiny_models import write_tiny_checkpoint

from sdstudio.cli.main import main
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.errors import ModelLoadError
from sdstudio.models.detect import (
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SDXL_PREFIX,
    bundled_tiny_model,
    detect_architecture,
    inferred_ldm_config,
    shipped_config,
)
from sdstudio.models.loader import load_checkpoint


@pytest.fixture(scope="module")
def bundled():
    path = bundled_tiny_model()
    assert path is not None and path.with_suffix(".yaml").is_file()
    return path


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from sdstudio.app import open_app

    return open_app(tmp_path_factory.mktemp("data")).engine


def draw(engine, checkpoint) -> np.ndarray:
    engine.select_model(ckpt=str(checkpoint))
    request = Txt2ImgRequest(prompt="a red circle", negative_prompt="blue", seed=3, width=64, height=64, steps=4)
    return np.asarray(engine.txt2img(request).images[0].convert("RGB"))


@pytest.fixture(scope="module")
def image_with_yaml(engine, bundled):
    return draw(engine, bundled)


def test_bundled_model_copied_without_its_yaml_draws_the_same_image(engine, bundled, image_with_yaml, tmp_path):
    copy = tmp_path / "copied-tiny.safetensors"
    shutil.copyfile(bundled, copy)
    assert np.array_equal(draw(engine, copy), image_with_yaml)


def test_cli_uses_the_native_size_of_a_copy_without_its_yaml(bundled, tmp_path):
    data = tmp_path / "data"
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    shutil.copyfile(bundled, folder / "copied-tiny.safetensors")
    out = tmp_path / "out"
    argv = ["--data-dir", str(data), "txt2img", "--model", "copied-tiny", "--prompt", "x", "--steps", "2"]
    assert main([*argv, "--outdir", str(out), "--no-progress"]) == 0
    from PIL import Image

    (saved,) = [p for p in out.rglob("*.png") if "grid" not in p.parts[-2]]
    with Image.open(saved) as image:
        assert image.size == (64, 64), "the bundled model's 64x64, not 512x512"


def test_tiny_layout_read_from_the_weights_draws_the_same_image(engine, bundled, image_with_yaml, tmp_path):
    # Re-saved (so no byte copy of the bundled file) with the scale factor as LDM's scale_by_std buffer,
    # the one number the weights' shapes cannot tell.
    scale = yaml.safe_load(bundled.with_suffix(".yaml").read_text())["model"]["params"]["scale_factor"]
    tensors = {**load_file(bundled), "scale_factor": torch.tensor(scale, dtype=torch.float64)}
    resaved = tmp_path / "resaved-tiny.safetensors"
    save_file(tensors, resaved)
    with_yaml, inferred = load_checkpoint(bundled), load_checkpoint(resaved)
    assert dict(inferred.unet.config) == dict(with_yaml.unet.config) | {"sample_size": inferred.unet.config.sample_size}
    assert dict(inferred.vae.config) == dict(with_yaml.vae.config)
    assert inferred.text_encoder.config.num_attention_heads == with_yaml.text_encoder.config.num_attention_heads
    assert np.array_equal(draw(engine, resaved), image_with_yaml)


def test_truncated_unet_without_yaml_is_one_clear_error(tmp_path, capsys):
    source = write_tiny_checkpoint(tmp_path / "source")
    tensors = {k: v for k, v in load_file(source).items() if ".output_blocks.3." not in k}
    folder = tmp_path / "data" / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    save_file(tensors, folder / "truncated.safetensors")
    code = main(["--data-dir", str(tmp_path / "data"), "txt2img", "--model", "truncated", "--prompt", "x"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "truncated.safetensors: the UNet weights are incomplete" in err
    assert "model.diffusion_model.output_blocks.3." in err  # a name to look for in the file


@pytest.mark.parametrize(
    ("dropped", "reason"),
    [
        (".input_blocks.1.", "input_blocks.1 is missing while later input blocks are there"),
        (".middle_block.1.", "its middle block has no transformer (no cross-attention)"),
    ],
)
def test_unet_layout_that_cannot_be_inferred_says_why(tmp_path, dropped, reason):
    source = write_tiny_checkpoint(tmp_path / "source")
    path = tmp_path / "odd.safetensors"
    save_file({k: v for k, v in load_file(source).items() if dropped not in k}, path)
    with pytest.raises(ModelLoadError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"odd.safetensors: no odd.yaml beside it and its UNet layout is not one sdstudio can infer: {reason}"
    )


TEXT_KEYS = {
    "v1-inference.yaml": SD1_TEXT_PREFIX,
    "v1-inpainting-inference.yaml": SD1_TEXT_PREFIX,
    "v2-inference.yaml": SD2_TEXT_PREFIX + "transformer.",
    "v2-inpainting-inference.yaml": SD2_TEXT_PREFIX + "transformer.",
    "sd_xl_base.yaml": SDXL_PREFIX + "1.model.transformer.",
    "sd_xl_refiner.yaml": SDXL_PREFIX + "0.model.transformer.",
}


@pytest.mark.parametrize("config_name", sorted(TEXT_KEYS))
def test_standard_checkpoints_keep_their_shipped_config(config_name):
    # The standard models' weight shapes, on the meta device (no memory, no files).
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    from sdstudio.models.saver import unet_key_map, vae_key_map

    shipped = shipped_config(config_name)
    with init_empty_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers' image_size deprecation, as in the loader
        unet = UNet2DConditionModel(**create_unet_diffusers_config_from_ldm(shipped, {}, image_size=512))
        vae = AutoencoderKL(**create_vae_diffusers_config_from_ldm(shipped, {}, image_size=512))
    unet_names, vae_names = unet_key_map(unet), vae_key_map(vae)
    state_dict = {unet_names[k]: v for k, v in unet.state_dict().items()}
    state_dict |= {vae_names[k]: v for k, v in vae.state_dict().items()}
    state_dict[TEXT_KEYS[config_name] + "x"] = torch.zeros(1)
    architecture = detect_architecture(state_dict)
    assert architecture.config_name == config_name
    assert inferred_ldm_config(state_dict, architecture) == shipped
