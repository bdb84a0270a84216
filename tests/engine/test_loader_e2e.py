"""A tiny random checkpoint written to disk with the model manager's saver, generated from
through the real loader, prompt layer, App wiring and CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("sdstudio.models.loader")
saver = pytest.importorskip("sdstudio.models.saver")

from sdstudio.cli.main import main  # noqa: E402
from sdstudio.engine.infotext import request_fields_from_infotext  # noqa: E402
from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest  # noqa: E402
from sdstudio.engine.saving import read_infotext  # noqa: E402

SMALL = dict(width=64, height=64, steps=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4,
    )
    vae = AutoencoderKL(block_out_channels=(32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=1, sample_size=64)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                num_attention_heads=2, max_position_embeddings=77))
    folder = tmp_path_factory.mktemp("ckpt")
    yaml_text = saver.ldm_yaml_for(unet.config, vae.config, scale_factor=0.5, text_heads=2)
    return saver.save_checkpoint(folder / "random-tiny.safetensors", unet=unet, vae=vae, text_encoder=text_encoder, yaml_text=yaml_text)


@pytest.fixture(scope="module")
def engine(checkpoint, tmp_path_factory):
    from sdstudio.app import open_app

    app = open_app(tmp_path_factory.mktemp("data"))
    app.engine.select_model(ckpt=str(checkpoint))
    return app.engine


def _pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_same_request_twice_is_identical_and_another_seed_differs(engine):
    request = Txt2ImgRequest(prompt="a (cat:1.2) AND a [dog:fox:1]", negative_prompt="ugly", seed=77, **SMALL)
    a, b = engine.txt2img(request), engine.txt2img(request)
    c = engine.txt2img(Txt2ImgRequest(prompt="a (cat:1.2) AND a [dog:fox:1]", negative_prompt="ugly", seed=78, **SMALL))
    assert np.array_equal(_pixels(a.images[0]), _pixels(b.images[0]))
    assert not np.array_equal(_pixels(a.images[0]), _pixels(c.images[0]))
    assert "Model: random-tiny" in a.infotexts[0]


def test_infotext_round_trip_and_img2img_and_hires(engine):
    request = Txt2ImgRequest(prompt="a house", seed=5, sampler_name="DPM++ SDE", scheduler="Karras", enable_hr=True,
                             hr_second_pass_steps=1, denoising_strength=0.5, **SMALL)
    result = engine.txt2img(request)
    assert result.images[0].size == (128, 128)
    with Image.open(result.saved_paths[0]) as saved:
        assert Txt2ImgRequest(**request_fields_from_infotext(read_infotext(saved))).model_dump() == request.model_dump()
    again = engine.img2img(Img2ImgRequest(prompt="a house", init_images=[result.images[0]], denoising_strength=0.3, seed=5, **SMALL))
    assert again.images[0].size == (64, 64)


def test_cli_txt2img_with_ckpt_prints_saved_paths(checkpoint, tmp_path, capsys):
    outdir = tmp_path / "out"
    code = main(["--data-dir", str(tmp_path / "data"), "txt2img", "--ckpt", str(checkpoint), "--prompt", "a cat", "--W", "64", "--H", "64",
                 "--steps", "2", "--seed", "5", "--n_samples", "2", "--outdir", str(outdir), "--no-progress"])
    assert code == 0
    from pathlib import Path

    printed = [Path(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(printed) == 3 and all(p.is_file() for p in printed)
    assert printed[0].name.startswith("00000-5-a cat") and printed[1].name.startswith("00001-6-a cat")
    assert printed[2].parent.parent == outdir / "grids"
    assert main(["pnginfo", str(printed[1])]) == 0
    assert "Seed: 6," in capsys.readouterr().out
