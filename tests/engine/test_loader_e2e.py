"""A tiny random checkpoint written to disk by the model manager's saver, loaded by the real
loader and generated from through the prompt layer, App wiring and CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tiny_models import write_tiny_checkpoint

from sdstudio.cli.main import main
from sdstudio.engine.infotext import request_fields_from_infotext
from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest
from sdstudio.engine.saving import read_infotext

SMALL = dict(width=64, height=64, steps=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


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
    request = Txt2ImgRequest(
        prompt="a house",
        seed=5,
        sampler_name="DPM++ SDE",
        scheduler="Karras",
        enable_hr=True,
        hr_second_pass_steps=1,
        denoising_strength=0.5,
        **SMALL,
    )
    result = engine.txt2img(request)
    assert result.images[0].size == (128, 128)
    with Image.open(result.saved_paths[0]) as saved:
        assert Txt2ImgRequest(**request_fields_from_infotext(read_infotext(saved))).model_dump() == request.model_dump()
    again = engine.img2img(
        Img2ImgRequest(prompt="a house", init_images=[result.images[0]], denoising_strength=0.3, seed=5, **SMALL)
    )
    assert again.images[0].size == (64, 64)


def test_cli_txt2img_with_ckpt_prints_saved_paths(checkpoint, tmp_path, capsys):
    outdir = tmp_path / "out"
    code = main(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "txt2img",
            "--ckpt",
            str(checkpoint),
            "--prompt",
            "a cat",
            "--W",
            "64",
            "--H",
            "64",
            "--steps",
            "2",
            "--seed",
            "5",
            "--n_samples",
            "2",
            "--outdir",
            str(outdir),
            "--no-progress",
        ]
    )
    assert code == 0
    from pathlib import Path

    printed = [Path(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(printed) == 3 and all(p.is_file() for p in printed)
    assert printed[0].name.startswith("00000-5-a cat") and printed[1].name.startswith("00001-6-a cat")
    assert printed[2].parent.parent == outdir / "grids"
    assert main(["pnginfo", str(printed[1])]) == 0
    assert "Seed: 6," in capsys.readouterr().out
