"""Files, names, metadata and grids as A1111 writes them."""

from __future__ import annotations

import os

from PIL import Image

from sdstudio.config import Settings
from sdstudio.engine.saving import (
    ImageSaver,
    fit_file_name,
    image_grid,
    next_sequence_number,
    read_infotext,
    sanitize_filename_part,
)


def test_sanitized_names_have_no_path_characters():
    assert sanitize_filename_part('a/b\\c:d*e?"f<g>|h\n', replace_spaces=False) == "a_b_c_d_e__f_g__h_"
    assert sanitize_filename_part("x" * 300) == "x" * 128
    assert sanitize_filename_part("  trailing dots. . ") == "__trailing_dots._._"


def test_numbering_continues_after_the_highest_file(tmp_path):
    for name in ("00003-1-a.png", "00010-2-b.png", "notes.txt", "grid-0004.png"):
        (tmp_path / name).write_bytes(b"")
    assert next_sequence_number(tmp_path) == 11
    assert next_sequence_number(tmp_path, "grid") == 5


def test_png_jpeg_webp_carry_the_infotext(paths):
    saver = ImageSaver(paths, Settings())
    text = "a cat, ünïcode\nNegative prompt: dog\nSteps: 2, Seed: 3"
    folder = saver.output_folder("txt2img")
    for fmt in ("png", "jpg", "webp"):
        path = saver.save_image(Image.new("RGB", (16, 16), "red"), folder, 3, "a cat", text, extension=fmt)
        with Image.open(path) as saved:
            assert read_infotext(saved) == text, fmt
    assert sorted(p.name for p in folder.iterdir()) == ["00000-3-a cat.png", "00001-3-a cat.jpg", "00002-3-a cat.webp"]
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_output_folders_follow_settings_and_override(paths, tmp_path):
    saver = ImageSaver(paths, Settings())
    assert saver.output_folder("img2img").parent == paths.root / "outputs" / "img2img-images"
    assert saver.output_folder("img2img", grid=True).parent == paths.root / "outputs" / "img2img-grids"
    assert saver.output_folder("txt2img", override=str(tmp_path / "mine")).parent == tmp_path / "mine"
    flat = ImageSaver(paths, Settings(save_to_dirs=False))
    assert flat.output_folder("txt2img") == paths.root / "outputs" / "txt2img-images"


def test_grid_rows_follow_a1111():
    tiles = [Image.new("RGB", (8, 8)) for _ in range(6)]
    assert image_grid(tiles).size == (24, 16)  # round(sqrt(6)) = 2 rows, 3 columns
    assert image_grid(tiles[:3]).size == (16, 16)  # round(sqrt(3)) = 2 rows, 2 columns
    assert image_grid(tiles[:4], n_rows=0, batch_size=4).size == (8, 32)  # rows = batch size


def test_grid_cells_fit_the_largest_image_and_centre_smaller_ones():
    """A1111 1.10: an X/Y/Z plot over "Size" tiles images of different sizes."""
    grid = image_grid([Image.new("RGB", (8, 4), "red"), Image.new("RGB", (4, 8), "blue")], rows=1)
    assert grid.size == (16, 8)
    assert grid.getpixel((0, 2)) == (255, 0, 0) and grid.getpixel((0, 0)) == (0, 0, 0)
    assert grid.getpixel((10, 0)) == (0, 0, 255) and grid.getpixel((8, 0)) == (0, 0, 0)


def test_long_names_are_cut_by_bytes_never_inside_a_character():
    decoration = "-1234-" + "猫" * 200  # 3 bytes each in UTF-8
    name = fit_file_name("00001", decoration, ".png", limit=100)
    assert len(name.encode("utf-8")) <= 100 and name.startswith("00001-1234-猫") and name.endswith("猫.png")
    assert fit_file_name("00001", "-short", ".png") == "00001-short.png"
    assert sanitize_filename_part("a\ud800b", replace_spaces=False) == "ab", "a lone surrogate cannot be in a name"


def test_a_long_non_ascii_prompt_saves_under_a_name_the_file_system_takes(paths):
    saver = ImageSaver(paths, Settings())
    folder = saver.output_folder("txt2img")
    for prompt in ("日本語の猫 " * 100, "\U0001f408" * 200, "\ud800 cat"):
        path = saver.save_image(Image.new("RGB", (8, 8)), folder, 42, prompt, None)
        assert path.exists() and len(path.name.encode("utf-8")) <= 255
        assert path.name.startswith(f"{next_sequence_number(folder) - 1:05}-42-")
