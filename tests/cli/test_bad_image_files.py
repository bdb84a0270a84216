"""Image files named on the command line go through the same decoder and pixel limit as API images (#19 class 4)."""

from __future__ import annotations

import json

from bad_files import png_declaring
from PIL import Image

from sdstudio.cli.main import main


def test_a_decompression_bomb_file_is_a_one_line_error_naming_the_option(data_dir, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(10_000, 10_000))  # 100 Mpx: Pillow only warns, the limit refuses
    assert main(["--data-dir", str(data_dir), "pnginfo", str(bomb)]) == 2
    assert capsys.readouterr().err.startswith("error: image: image too large (10000×10000 = 100.0 megapixels)")
    argv = ["--data-dir", str(data_dir), "img2img", "--init-image", str(bomb), "--steps", "1", "a cat"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: init_images: image too large")


def test_the_limit_comes_from_the_data_dirs_settings(data_dir, tmp_path, capsys):
    image = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(image)
    data_dir.mkdir(parents=True)
    (data_dir / "config.json").write_text(json.dumps({"img_max_decode_mp": 0.004}))
    assert main(["--data-dir", str(data_dir), "pnginfo", str(image)]) == 2
    assert "the limit is 0.004 megapixels (setting img_max_decode_mp)" in capsys.readouterr().err
