"""sd_vae picks an external VAE as A1111 does; memory switches keep images; a changed load setting reloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import write_tiny_checkpoint

from sdstudio.app import open_app
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.errors import NotFound


def write_vae(path, checkpoint, shift: float = 0.5):
    """The checkpoint's VAE in A1111's VAE-file layout (no first_stage_model. prefix), decoder output shifted."""
    tensors = {
        k.removeprefix("first_stage_model."): v.clone()
        for k, v in load_file(checkpoint).items()
        if k.startswith("first_stage_model.")
    }
    tensors["decoder.conv_out.bias"] += shift
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def generate(app, **changes):
    request = Txt2ImgRequest(
        **(
            {
                "prompt": "a red circle",
                "seed": 3,
                "steps": 3,
                "width": 32,
                "height": 32,
                "sampler_name": "Euler",
                "do_not_save_samples": True,
                "do_not_save_grid": True,
            }
            | changes
        )
    )
    result = app.engine.txt2img(request)
    return np.asarray(result.images[result.index_of_first_image], dtype=np.int16), result.infotexts[0]


@pytest.fixture
def app_with_vaes(data_dir_with_model):
    checkpoint = data_dir_with_model / "models" / "Stable-diffusion" / "random-tiny.safetensors"
    write_vae(data_dir_with_model / "models" / "VAE" / "bright.safetensors", checkpoint, shift=0.6)
    return open_app(data_dir_with_model), checkpoint


def test_sd_vae_none_named_and_automatic(app_with_vaes):
    app, checkpoint = app_with_vaes
    app.settings_store.change({"sd_vae": "None"})
    baked, info = generate(app)
    assert "VAE:" not in info and "VAE hash" not in info

    app.settings_store.change({"sd_vae": "bright.safetensors"})  # takes effect on the next job: the checkpoint reloads
    bright, info = generate(app)
    assert (bright - baked).mean() > 20
    assert "VAE: bright.safetensors" in info
    assert f"VAE hash: {app.models.find('vae', 'bright').shorthash}" in info

    app.settings_store.change({"sd_vae": "Automatic"})  # nothing named after the checkpoint yet: the baked-in VAE
    assert np.array_equal(generate(app)[0], baked)
    beside = write_vae(checkpoint.with_name("random-tiny.vae.safetensors"), checkpoint, shift=-0.6)
    dark, info = generate(app)
    assert (baked - dark).mean() > 20 and "VAE: random-tiny.vae.safetensors" in info
    names = [e.name for e in app.models.list("checkpoint", with_hashes=False)]
    assert "random-tiny.vae.safetensors" not in names
    assert beside.name in [e.name for e in app.models.list("vae", with_hashes=False)]


def test_unknown_sd_vae_is_a_clear_error(app_with_vaes):
    app, _ = app_with_vaes
    app.settings_store.change({"sd_vae": "missing.safetensors"})
    with pytest.raises(NotFound, match=r"sd_vae: no VAE named 'missing.safetensors'.*bright.safetensors"):
        generate(app)


def test_attention_slicing_vae_tiling_and_cpu_offload_keep_the_image(app_with_vaes):
    app, _ = app_with_vaes
    app.settings_store.change({"sd_vae": "None"})
    plain, _ = generate(app, width=96, height=96)
    app.settings_store.change({"attention_slicing": True})
    app.settings_store.change({"cpu_offload": True})  # on the CPU there is nothing to offload: same image
    sliced, _ = generate(app, width=96, height=96)
    assert np.abs(sliced - plain).max() <= 1
    model = app.engine.model_source(None)
    assert any("Sliced" in type(p).__name__ for p in model.unet.attn_processors.values())

    app.settings_store.change({"vae_tiling": True})
    model = app.engine.model_source(None)
    assert model.vae.use_tiling
    tiled, _ = generate(app, width=96, height=96)  # 96 px > the VAE's 32 px tile: decoded in blended tiles
    assert tiled.shape == plain.shape
    assert np.abs(tiled - plain).mean() < 20


def test_switching_checkpoints_keeps_one_model_loaded(data_dir_with_model):
    import gc
    import weakref

    write_tiny_checkpoint(data_dir_with_model / "models" / "Stable-diffusion", "second.safetensors", seed=1)
    app = open_app(data_dir_with_model)
    first = app.engine.model_source("random-tiny.safetensors")
    first_unet = weakref.ref(first.unet)
    del first
    second = app.engine.model_source("second.safetensors")
    gc.collect()
    assert first_unet() is None  # the first checkpoint's weights were released
    assert second.name == "second"
    assert torch.is_tensor(next(second.unet.parameters()))


def test_sd_vae_per_request_through_override_settings(app_with_vaes):
    app, _ = app_with_vaes
    app.settings_store.change({"sd_vae": "None"})
    baked, _ = generate(app)
    bright, info = generate(app, override_settings={"sd_vae": "bright.safetensors"})
    assert (bright - baked).mean() > 20 and "VAE: bright.safetensors" in info
    assert app.settings.sd_vae == "None", "the override held for that job only"
    assert np.array_equal(generate(app)[0], baked)


def test_samples_format_per_request_through_override_settings(app_with_vaes):
    app, _ = app_with_vaes
    request = Txt2ImgRequest(
        prompt="a red circle",
        seed=3,
        steps=2,
        width=32,
        height=32,
        sampler_name="Euler",
        override_settings={"samples_format": "webp"},
    )
    result = app.engine.txt2img(request)
    saved = sorted(app.paths.outputs.rglob("*.webp"))
    assert len(saved) == 1 and result.images
    assert not list(app.paths.outputs.rglob("*.png"))
