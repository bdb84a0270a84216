"""CompVis/A1111 command-line parity: --skip_save, --n_rows, --C, --f, --ddim_eta, --precision autocast,
A1111 option lines in --from-file, and --infotext (on the bundled model, through the real CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli.main import build_parser, main


def _printed(capsys) -> list[Path]:
    return [Path(line) for line in capsys.readouterr().out.split("\n") if line.strip()]


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_skip_save_writes_only_the_grid_with_n_rows_rows(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data-dir", str(tmp_path / "data"), "txt2img", "--steps", "1", "--seed", "3", "--n_samples", "4"]
    argv += ["--n_rows", "1", "--skip_save", "--C", "4", "--f", "4", "--precision", "autocast"]  # f 4: the tiny VAE's
    assert main([*argv, "--outdir", str(out), "--no-progress", "a cat"]) == 0
    printed = _printed(capsys)
    assert [p for p in out.rglob("*") if p.is_file()] == printed and printed[0].parent.parent == out / "grids"
    assert Image.open(printed[0]).size == (4 * 64, 64)  # one row of four (default: 2x2)


@pytest.mark.parametrize("flag, field", [(["--C", "3"], "C"), (["--f", "16"], "f")])
def test_latent_shape_flags_other_than_the_models_are_refused(tmp_path, capsys, flag, field):
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "txt2img", *flag, "a cat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}: {' '.join(flag)}:") and "Traceback" not in err
    assert not data.exists()


def test_compvis_eta_and_precision_names_mean_sdstudios():
    from sdstudio.cli.model_args import load_options
    from sdstudio.cli.txt2img import common_request_fields

    parser = build_parser()
    compvis = parser.parse_args(["txt2img", "--ddim_eta", "0.3", "--precision", "autocast", "--W", "64", "--H", "64"])
    ours = parser.parse_args(["txt2img", "--eta", "0.3", "--precision", "auto", "--W", "64", "--H", "64"])
    assert common_request_fields(compvis, "x") == common_request_fields(ours, "x")
    assert common_request_fields(compvis, "x")["eta"] == 0.3
    assert load_options(compvis) == load_options(ours) == {"precision": "auto"}
    assert load_options(parser.parse_args(["txt2img", "--precision", "full"])) == {"precision": "fp32"}


def test_a1111_option_line_runs_its_prompt_to_the_next_option_and_types_values():
    from sdstudio.cli.txt2img import parse_prompt_line

    line = '--prompt a "red circle" on blue --negative_prompt dark --sampler_index 6 --cfg_scale 5 --tiling true'
    assert parse_prompt_line(line, 1) == {
        "prompt": "a red circle on blue",
        "negative_prompt": "dark",
        "sampler_name": "Euler a",  # position 6 of the sampler list
        "cfg_scale": 5.0,
        "tiling": True,
    }
    assert parse_prompt_line("a cat -- with --steps 3 in it", 1) == {"prompt": "a cat -- with --steps 3 in it"}


@pytest.mark.parametrize(
    "line, message",
    [
        ("--prompt x --bogus 3", "line 2: unknown option --bogus"),
        ("--steps many", "line 2: --steps expects an integer, got 'many'"),
        ("--prompt x --seed", "line 2: --seed needs a value"),
        ("--sampler_name Bogus", "line 2: --sampler_name: unknown sampler 'Bogus'"),
        ("--sd_model other", "line 2: --sd_model cannot change per line"),
    ],
)
def test_bad_option_line_is_refused_naming_line_and_option(tmp_path, capsys, line, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"a plain prompt\n{line}\n", encoding="utf-8")
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "txt2img", "--from-file", str(prompts)]) == 2
    assert capsys.readouterr().err.startswith(f"error: from_file: {message}")
    assert not data.exists()


def test_from_file_line_and_infotext_reproduce_the_image_of_the_same_flags(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path / "data")]
    common = ["--skip_grid", "--no-progress"]
    flags = ["--prompt", "a red circle", "--negative_prompt", "dark", "--steps", "2", "--seed", "11"]
    flags += ["--cfg-scale", "5", "--sampler", "Euler"]
    assert main([*data, "txt2img", *flags, *common, "--outdir", str(tmp_path / "a")]) == 0
    [reference] = _printed(capsys)

    prompts = tmp_path / "prompts.txt"
    line = '--prompt "a red circle" --negative_prompt dark --steps 2 --seed 11 --cfg_scale 5 --sampler_name euler'
    prompts.write_text(f"a blue square\n\n{line}\n", encoding="utf-8")
    argv = [*data, "txt2img", "--from-file", str(prompts), "--steps", "1", *common, "--outdir", str(tmp_path / "b")]
    assert main(argv) == 0
    plain, from_line = _printed(capsys)
    assert np.array_equal(_pixels(from_line), _pixels(reference))
    assert main(["pnginfo", str(plain)]) == 0
    info = capsys.readouterr().out
    assert info.startswith("a blue square\nSteps: 1,")  # a plain line is still just the prompt

    argv = [*data, "txt2img", "--infotext", str(reference), *common, "--outdir", str(tmp_path / "c")]
    assert main(argv) == 0
    [pasted] = _printed(capsys)
    assert np.array_equal(_pixels(pasted), _pixels(reference))


def test_options_given_on_the_command_line_override_the_infotext(tmp_path):
    from sdstudio.cli.txt2img import generation_fields

    infotext = (
        "a cat\nNegative prompt: dog\n"
        "Steps: 30, Sampler: Euler a, Schedule type: Karras, CFG scale: 4.5, Seed: 9, Size: 96x64, Clip skip: 2"
    )
    argv = ["--data-dir", str(tmp_path / "data"), "txt2img", "--infotext", infotext]
    args = build_parser().parse_args([*argv, "--steps", "20", "--clip-skip", "1", "a bird"])  # 20: the default
    [fields] = generation_fields(args, "txt2img", {})
    assert (fields["prompt"], fields["negative_prompt"], fields["steps"]) == ("a bird", "dog", 20)
    assert (fields["sampler_name"], fields["scheduler"], fields["cfg_scale"]) == ("Euler a", "Karras", 4.5)
    assert (fields["seed"], fields["width"], fields["height"]) == (9, 96, 64)
    assert fields["override_settings"] == {"CLIP_stop_at_last_layers": 1}
