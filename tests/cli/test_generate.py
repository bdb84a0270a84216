"""`sdstudio txt2img / img2img / pnginfo` from the command line (in-process `main`)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from sdstudio.cli.main import main
from sdstudio.config import DataPaths, Settings
from sdstudio.engine.saving import ImageSaver


@pytest.mark.parametrize(
    "argv, field",
    [
        (["txt2img", "--W", "500", "a cat"], "width"),
        (["txt2img", "--steps", "0", "a cat"], "steps"),
        (["txt2img", "--sampler", "Bogus", "a cat"], "sampler_name"),
        (["txt2img", "--scheduler", "Bogus", "a cat"], "scheduler"),
        (["txt2img", "--scale", "500", "a cat"], "cfg_scale"),
        (["txt2img", "--seed-resize-from", "big", "a cat"], "seed_resize_from_w"),
        (["img2img", "a cat"], "init_images"),
        (["img2img", "--init-image", "missing.png", "a cat"], "init_images"),
        (["img2img", "--init-image", "INIT", "--denoising-strength", "2", "a cat"], "denoising_strength"),
    ],
)
def test_bad_request_is_one_line_naming_the_field_and_writes_nothing(tmp_path, capsys, argv, field):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(init)
    argv = [str(init) if a == "INIT" else a for a in argv]
    data = tmp_path / "data"
    code = main(["--data-dir", str(data), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {field}:") and err.count("\n") == 1 and "Traceback" not in err
    assert not data.exists()  # nothing created, let alone half-written


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "txt2img",
            "--model",
            "no-such-model",
            "--steps",
            "1",
            "--W",
            "64",
            "--H",
            "64",
            "--no-progress",
            "a cat",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "checkpoint" in err and "Traceback" not in err


def test_compvis_aliases_parse_to_the_same_request():
    from sdstudio.cli.main import build_parser
    from sdstudio.cli.txt2img import common_request_fields

    parser = build_parser()
    compvis = parser.parse_args(
        [
            "txt2img",
            "--prompt",
            "x",
            "--H",
            "64",
            "--W",
            "128",
            "--scale",
            "5",
            "--n_samples",
            "2",
            "--n_iter",
            "3",
            "--ddim_steps",
            "7",
            "--plms",
            "--skip_grid",
        ]
    )
    long = parser.parse_args(
        [
            "txt2img",
            "--prompt",
            "x",
            "--height",
            "64",
            "--width",
            "128",
            "--cfg-scale",
            "5",
            "--batch-size",
            "2",
            "--n-iter",
            "3",
            "--steps",
            "7",
            "--sampler",
            "PLMS",
            "--skip-grid",
        ]
    )
    assert common_request_fields(compvis, "x") == common_request_fields(long, "x")


def test_pnginfo_prints_text_and_json(tmp_path, capsys):
    paths = DataPaths(tmp_path / "data").ensure()
    text = (
        "a cat\nNegative prompt: dog\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 9, Size: 64x64"
    )
    saved = ImageSaver(paths, Settings()).save_image(Image.new("RGB", (8, 8)), tmp_path, 9, "a cat", text)
    assert main(["pnginfo", str(saved)]) == 0
    assert capsys.readouterr().out.strip() == text
    assert main(["pnginfo", str(saved), "--json"]) == 0
    fields = json.loads(capsys.readouterr().out)["fields"]
    assert fields["seed"] == 9 and fields["sampler_name"] == "Euler a" and fields["negative_prompt"] == "dog"


def test_pnginfo_on_a_plain_image_and_a_missing_file(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["pnginfo", str(plain)]) == 1
    assert main(["pnginfo", str(tmp_path / "nope.png")]) == 2
    assert "error: image:" in capsys.readouterr().err


def test_txt2img_cli_end_to_end_on_the_tiny_model(tmp_path, capsys):
    from pathlib import Path

    import sdstudio

    tiny = Path(sdstudio.__file__).parent / "assets" / "tiny" / "sdstudio-tiny.safetensors"
    if not tiny.exists():
        pytest.skip("bundled tiny model not present")
    outdir = tmp_path / "out"
    argv = [
        "--data-dir",
        str(tmp_path / "data"),
        "txt2img",
        "--ckpt",
        str(tiny),
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
    ]
    assert main(argv) == 0
    printed = [Path(line) for line in capsys.readouterr().out.split("\n") if line.strip()]
    assert len(printed) == 3 and all(p.is_file() for p in printed)
    assert printed[0].parent.parent == outdir and printed[0].name.startswith("00000-5-a cat")
    assert printed[2].parent.parent == outdir / "grids"
    assert main(["pnginfo", str(printed[1])]) == 0
    assert "Seed: 6," in capsys.readouterr().out


def test_loading_flags_pick_a_vae_and_memory_switches_for_this_run(tmp_path, capsys):
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from sdstudio.config import load_settings

    data = tmp_path / "data"
    tiny = Path(__import__("sdstudio").__file__).parent / "assets" / "tiny" / "sdstudio-tiny.safetensors"
    vae = {
        k.removeprefix("first_stage_model."): v
        for k, v in load_file(tiny).items()
        if k.startswith("first_stage_model.")
    }
    (data / "models" / "VAE").mkdir(parents=True)
    save_file(vae, str(data / "models" / "VAE" / "copy.safetensors"))
    argv = [
        "--data-dir",
        str(data),
        "txt2img",
        "--prompt",
        "a red circle on a blue background",
        "--steps",
        "2",
        "--seed",
        "1",
        "--outdir",
        str(tmp_path / "out"),
        "--skip_grid",
        "--vae",
        "copy.safetensors",
        "--attention-slicing",
        "--vae-tiling",
        "--precision",
        "fp32",
    ]
    assert main(argv) == 0
    image = Path(capsys.readouterr().out.split("\n")[0])
    assert main(["pnginfo", str(image)]) == 0
    assert "VAE: copy.safetensors" in capsys.readouterr().out
    saved = load_settings(DataPaths(data).config_file).settings
    assert saved.sd_vae == "Automatic" and not saved.attention_slicing  # flags are for this run only
    assert main(["--data-dir", str(data), "txt2img", "a cat", "--vae", "nope.safetensors", "--steps", "2"]) != 0
    assert "sd_vae: no VAE named 'nope.safetensors'" in capsys.readouterr().err


@pytest.mark.parametrize("fixed_code", [[], ["--fixed_code"]])  # --fixed_code: one job per batch
def test_img2img_makes_one_image_per_init_image_at_batch_size_one(tmp_path, capsys, fixed_code):
    from pathlib import Path

    import numpy as np

    red, blue = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (64, 64), (230, 20, 20)).save(red)
    Image.new("RGB", (64, 64), (20, 20, 230)).save(blue)
    argv = ["--data-dir", str(tmp_path / "data"), "img2img", "--init-image", str(red), "--init-image", str(blue)]
    argv += ["--denoising-strength", "0.05", "--steps", "2", "--seed", "3", "--skip_grid", "--no-progress", "x"]
    assert main([*argv, *fixed_code, "--outdir", str(tmp_path / "out")]) == 0
    printed = [Path(line) for line in capsys.readouterr().out.split("\n") if line.strip()]
    assert len(printed) == 2  # b.png is not dropped: two batches of one
    means = [np.asarray(Image.open(path).convert("RGB"), dtype=float).mean(axis=(0, 1)) for path in printed]
    assert means[0][0] > means[0][2] and means[1][2] > means[1][0]  # first from a.png (red), second from b.png


def test_refiner_and_hires_checkpoint_flags(tmp_path, capsys):
    import shutil
    from pathlib import Path

    from sdstudio.models.detect import bundled_tiny_model

    data = tmp_path / "data"
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for name in ("base-tiny", "second-tiny"):
        shutil.copyfile(bundled_tiny_model(), folder / f"{name}.safetensors")
    common = ["--data-dir", str(data), "txt2img", "--model", "base-tiny", "--steps", "4", "--no-progress", "a cat"]
    refined = [*common, "--refiner", "second-tiny", "--refiner-switch-at", "0.5", "--outdir", str(tmp_path / "a")]
    assert main(refined) == 0
    (saved,) = [Path(line) for line in capsys.readouterr().out.split("\n") if line.strip()]
    with Image.open(saved) as image:
        infotext = image.info["parameters"]
    assert "Refiner: second-tiny [" in infotext and "Refiner switch at: 0.5" in infotext
    hires = [*common, "--hires", "--hr-scale", "1.5", "--hr-checkpoint", "second-tiny", "--outdir", str(tmp_path / "b")]
    assert main(hires) == 0
    (saved,) = [Path(line) for line in capsys.readouterr().out.split("\n") if line.strip()]
    with Image.open(saved) as image:
        assert "Hires checkpoint: second-tiny [" in image.info["parameters"] and image.size == (96, 96)
    assert main([*common, "--refiner", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: refiner_checkpoint: no checkpoint named 'nope'")
