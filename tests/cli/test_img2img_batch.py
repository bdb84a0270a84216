"""`sdstudio img2img --input-dir`: A1111's img2img Batch tab from the command line, on the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli.main import main

FAST = ["--steps", "2", "--seed", "3", "--no-progress"]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=float)


def printed_paths(out: str) -> list[Path]:
    return [Path(line) for line in out.split("\n") if line.strip()]


def test_batch_writes_one_image_per_readable_input_under_its_name(tmp_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    Image.new("RGB", (64, 64), (220, 30, 30)).save(inputs / "cat.png")
    Image.new("RGB", (64, 64), (30, 30, 220)).save(inputs / "dog.jpg")
    (inputs / "broken.png").write_bytes(b"this is not a PNG")
    (inputs / "notes.txt").write_text("not an image, not picked up")
    argv = ["--data-dir", str(tmp_path / "data"), "img2img", "--input-dir", str(inputs), "--output-dir", str(outputs)]
    assert main([*argv, *FAST, "a cat"]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in outputs.iterdir()) == ["cat.png", "dog.png"]
    assert sorted(printed_paths(captured.out)) == [outputs / "cat.png", outputs / "dog.png"]
    assert "warning: skipped" in captured.err and "broken.png" in captured.err and "notes.txt" not in captured.err
    assert main(["pnginfo", str(outputs / "dog.png")]) == 0
    infotext = capsys.readouterr().out
    assert infotext.startswith("a cat\n") and "Steps: 2," in infotext and "Seed: 3," in infotext
    assert "Denoising strength: 0.75" in infotext
    red = pixels(outputs / "cat.png").mean(axis=(0, 1))
    assert red[0] > red[2]  # cat.png came from the red input, not the blue one


def test_several_images_per_file_are_numbered_and_taken_names_are_kept(tmp_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(inputs / "cat.png")
    (outputs / "cat-1.png").write_bytes(b"the user's own file")
    argv = ["--data-dir", str(tmp_path / "data"), "img2img", "--input-dir", str(inputs), "--output-dir", str(outputs)]
    assert main([*argv, *FAST, "--batch-size", "2", "x"]) == 0
    assert sorted(p.name for p in outputs.iterdir()) == ["cat-1-1.png", "cat-1.png", "cat-2.png"]
    assert (outputs / "cat-1.png").read_bytes() == b"the user's own file"
    assert sorted(printed_paths(capsys.readouterr().out)) == [outputs / "cat-1-1.png", outputs / "cat-2.png"]


def test_masks_are_matched_by_file_stem_and_only_the_masked_part_changes(tmp_path, capsys):
    inputs, masks, outputs = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    inputs.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for name in ("left", "right"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(inputs / f"{name}.png")
    left, right = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    left[:, :32], right[:, 32:] = 255, 255
    Image.fromarray(left).save(masks / "left.png")
    Image.fromarray(right).save(masks / "right.webp", lossless=True)
    Image.new("L", (64, 64), 255).save(masks / "unrelated.png")  # more than one mask: matched by name
    argv = ["--data-dir", str(tmp_path / "data"), "img2img", "--input-dir", str(inputs), "--output-dir", str(outputs)]
    argv += ["--mask-dir", str(masks), "--mask-blur", "0", "--denoising-strength", "1"]
    assert main([*argv, *FAST, "a cat"]) == 0
    for name, changed in (("left", slice(0, 32)), ("right", slice(32, 64))):
        before, after = pixels(inputs / f"{name}.png"), pixels(outputs / f"{name}.png")
        kept = slice(32, 64) if changed.start == 0 else slice(0, 32)
        assert np.array_equal(after[:, kept], before[:, kept]), f"{name}: the unmasked half must be untouched"
        assert np.abs(after[:, changed] - before[:, changed]).mean() > 10, f"{name}: the masked half must change"
    assert main(["pnginfo", str(outputs / "left.png")]) == 0
    assert "Mask blur: 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--init-image", "IN/a.png"], "img2img_batch_input_dir"),
        (["--mask-dir", "NOWHERE"], "img2img_batch_inpaint_mask_dir"),
        (["--mask", "IN/a.png"], "mask"),
    ],
)
def test_batch_option_mistakes_are_one_line_naming_the_field(tmp_path, capsys, extra, field):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (64, 64)).save(inputs / "a.png")
    extra = [a.replace("IN", str(inputs)).replace("NOWHERE", str(tmp_path / "nowhere")) for a in extra]
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "img2img", "--input-dir", str(inputs), *extra, "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and err.count("\n") == 1
    assert not data.exists()  # refused before anything was written


def test_a_missing_or_empty_input_folder_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, message in ((tmp_path / "nowhere", "no such folder"), (empty, "no image files")):
        assert main(["--data-dir", str(tmp_path / "data"), "img2img", "--input-dir", str(folder), "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: img2img_batch_input_dir:") and message in err
