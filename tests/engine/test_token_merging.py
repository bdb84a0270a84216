"""A1111's token merging (token_merging_ratio, _img2img, _hr) through tomesd: on for its pass only, named in
the infotext, pasted back, the same image for the same seed, and the UNet exactly as it was afterwards."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.infotext import request_fields_from_infotext
from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest

SMALL = dict(prompt="a red cube", width=64, height=64, steps=4, seed=3, sampler_name="Euler", do_not_save_grid=True)
MERGING = {"token_merging_ratio": 0.5}


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def unet_output(model):
    import torch

    unet = model.unet
    x = torch.randn(1, unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 4, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return unet(x, torch.tensor([500]), encoder_hidden_states=context).sample


def test_merging_changes_the_image_within_bounds_and_the_unet_is_restored(service, tiny_model):
    before = unet_output(tiny_model)
    plain = service.txt2img(Txt2ImgRequest(**SMALL))
    merged = service.txt2img(Txt2ImgRequest(**SMALL, override_settings=MERGING))
    again = service.txt2img(Txt2ImgRequest(**SMALL, override_settings=MERGING))
    assert np.array_equal(pixels(merged), pixels(again))  # A1111's use_rand=False: same seed, same image
    assert not np.array_equal(pixels(plain), pixels(merged))  # the tiny UNet attends at full size: tokens merge
    assert psnr(pixels(plain), pixels(merged)) > 10  # a change, not a different picture (random weights)
    assert "Token merging ratio: 0.5" in merged.infotexts[0]
    assert "Token merging ratio" not in plain.infotexts[0]
    assert all("ToMe" not in type(module).__name__ for module in tiny_model.unet.modules())
    assert not tiny_model.unet._forward_pre_hooks and not hasattr(tiny_model.unet, "_tome_info")
    assert np.array_equal(unet_output(tiny_model).numpy(), before.numpy())
    assert np.array_equal(pixels(service.txt2img(Txt2ImgRequest(**SMALL))), pixels(plain))


def test_the_infotext_pastes_the_ratios_back_as_settings(service):
    hires = dict(SMALL, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5)
    result = service.txt2img(Txt2ImgRequest(**hires, override_settings={**MERGING, "token_merging_ratio_hr": 0.3}))
    infotext = result.infotexts[0]
    assert "Token merging ratio: 0.5" in infotext and "Token merging ratio hr: 0.3" in infotext
    fields = request_fields_from_infotext(infotext, "txt2img")
    assert fields["override_settings"]["token_merging_ratio"] == 0.5
    assert fields["override_settings"]["token_merging_ratio_hr"] == 0.3
    pasted = service.txt2img(Txt2ImgRequest(**{**hires, **fields}))
    assert np.array_equal(pixels(pasted), pixels(result))


def test_the_hires_pass_falls_back_to_the_first_pass_ratio(service):
    hires = dict(SMALL, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5)
    result = service.txt2img(Txt2ImgRequest(**hires, override_settings=MERGING))
    assert "Token merging ratio hr: 0.5" in result.infotexts[0]  # A1111: token_merging_ratio_hr 0 = the first's


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"token_merging_ratio_img2img": 0.4}, "0.4"),
        ({"token_merging_ratio": 0.5}, "0.5"),  # the job overrides the general ratio: it wins, as in A1111
        ({"token_merging_ratio": 0.5, "token_merging_ratio_img2img": 0.4}, "0.5"),
    ],
)
def test_img2img_uses_its_own_ratio_unless_the_job_overrides_the_general_one(service, overrides, expected):
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    request = Img2ImgRequest(**SMALL, init_images=[init], denoising_strength=0.6, override_settings=overrides)
    assert f"Token merging ratio: {expected}" in service.img2img(request).infotexts[0]


def test_a_ratio_out_of_range_is_refused_naming_it(service):
    from sdstudio.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="token_merging_ratio"):
        service.txt2img(Txt2ImgRequest(**SMALL, override_settings={"token_merging_ratio": 0.95}))
