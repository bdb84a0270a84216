"""The step cache (step_cache_interval, DeepCache's uniform schedule): fewer full UNet calls, a bounded change
to the image, named in the infotext and pasted back, and the UNet exactly as it was afterwards.

On the bundled model (real loading and sampling), 64x64, 20 Euler steps; measured there: interval 2 keeps
27.5 dB PSNR against the full computation, interval 3 only 12 dB (its UNet has three levels, so the shallow
branch is very shallow)."""

from __future__ import annotations

import numpy as np
import pytest

from sdstudio.app import open_app
from sdstudio.engine.infotext import request_fields_from_infotext
from sdstudio.engine.request import Txt2ImgRequest

JOB = dict(
    prompt="a red circle on a blue background",
    steps=20,
    width=64,
    height=64,
    seed=4,
    sampler_name="Euler",
    do_not_save_samples=True,
    do_not_save_grid=True,
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return open_app(tmp_path_factory.mktemp("step-cache") / "data").engine


def generate(engine, **fields):
    result = engine.txt2img(Txt2ImgRequest(**{**JOB, **fields}))
    return np.asarray(result.images[0].convert("RGB"), dtype=np.float64), result.infotexts[0]


def psnr(a, b) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_every_other_call_runs_in_full_and_the_image_stays_close(engine):
    unet = engine.model_source(None, engine.settings_store.current).unet  # the bundled model, as jobs load it
    full_calls = []
    hook = unet.down_blocks[-1].register_forward_hook(lambda *_: full_calls.append(1))
    try:
        plain, plain_info = generate(engine)
        calls_plain = len(full_calls)
        cached, cached_info = generate(engine, override_settings={"step_cache_interval": 2})
        calls_cached = len(full_calls) - calls_plain
    finally:
        hook.remove()
    assert calls_plain == 20 and calls_cached == 10
    assert not np.array_equal(plain, cached)
    assert psnr(plain, cached) >= 25
    assert "Step cache interval: 2" in cached_info and "Step cache" not in plain_info
    assert np.array_equal(generate(engine)[0], plain)  # the UNet is back as it was
    assert all(type(block).__name__ != "_Kept" for block in [*unet.down_blocks, *unet.up_blocks, unet.mid_block])


def test_the_infotext_pastes_the_interval_back(engine):
    cached, info = generate(engine, override_settings={"step_cache_interval": 2})
    fields = request_fields_from_infotext(info, "txt2img")
    assert fields["override_settings"]["step_cache_interval"] == 2
    assert np.array_equal(generate(engine, **{**JOB, **fields})[0], cached)
