"""`sdstudio extras` and `sdstudio watermark` from the command line."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from sdstudio.cli.main import main


def _image(path, width=40, height=32, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_extras_upscales_and_prints_saved_paths(data_dir, tmp_path, capsys):
    source = _image(tmp_path / "photo.png")
    out = tmp_path / "out"
    code = main(
        [
            "--data-dir",
            str(data_dir),
            "extras",
            str(source),
            "--upscaler",
            "Lanczos",
            "--scale",
            "2",
            "--outdir",
            str(out),
        ]
    )
    printed = capsys.readouterr().out.split()
    assert code == 0
    assert printed == [str(out / "photo.png")]
    saved = Image.open(out / "photo.png")
    assert saved.size == (80, 64)
    assert saved.info["parameters"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_extras_resize_to_and_second_upscaler(data_dir, tmp_path, capsys):
    source = _image(tmp_path / "photo.png")
    code = main(
        [
            "--data-dir",
            str(data_dir),
            "extras",
            str(source),
            "--upscaler",
            "Lanczos",
            "--resize-to",
            "100x50",
            "--upscaler-2",
            "Nearest",
            "--upscaler-2-visibility",
            "0.5",
        ]
    )
    saved_path = capsys.readouterr().out.strip()
    assert code == 0 and saved_path.startswith(str(data_dir / "outputs" / "extras-images"))
    saved = Image.open(saved_path)
    assert saved.size == (100, 50)
    assert "Postprocess upscaler 2: Nearest" in saved.info["postprocessing"]


def test_extras_unknown_upscaler_is_one_line_naming_the_choices(data_dir, tmp_path, capsys):
    source = _image(tmp_path / "photo.png")
    code = main(["--data-dir", str(data_dir), "extras", str(source), "--upscaler", "4x-Nope"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("error: --upscaler:") and "Lanczos" in err


def test_extras_bad_values_and_missing_file(data_dir, tmp_path, capsys):
    assert main(["--data-dir", str(data_dir), "extras", str(tmp_path / "missing.png"), "--upscaler", "Lanczos"]) == 2
    assert "missing.png" in capsys.readouterr().err
    source = _image(tmp_path / "photo.png")
    assert (
        main(["--data-dir", str(data_dir), "extras", str(source), "--upscaler", "Lanczos", "--resize-to", "big"]) == 2
    )
    assert "--resize-to" in capsys.readouterr().err
    assert (
        main(
            [
                "--data-dir",
                str(data_dir),
                "extras",
                str(source),
                "--face-restorer",
                "gfpgan",
                "--face-restorer-visibility",
                "2",
            ]
        )
        == 2
    )
    assert "--face-restorer-visibility" in capsys.readouterr().err


def test_watermark_encode_then_decode(tmp_path, capsys):
    # DWT-DCT is fragile on noise and ramps (a bit flips); flat shapes, like most pictures, carry it
    picture = Image.new("RGB", (320, 320), (70, 90, 120))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((40, 30, 200, 220), fill=(225, 180, 150))
    draw.rectangle((150, 150, 300, 250), fill=(30, 140, 60))
    source = tmp_path / "big.png"
    picture.save(source)
    marked = tmp_path / "marked.png"
    assert main(["watermark", "encode", str(source), "--out", str(marked)]) == 0
    capsys.readouterr()
    assert main(["watermark", "decode", str(marked)]) == 0
    assert capsys.readouterr().out.strip() == f"{marked}: StableDiffusionV1"
    assert main(["watermark", "decode", str(source)]) == 1
    assert "does not match" in capsys.readouterr().out
