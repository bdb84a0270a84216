"""`sdstudio merge`: A1111's merger fields as flags; a bad value names its flag."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from sdstudio.cli.main import main


def write_models(data_dir):
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for name, seed in (("a", 1), ("b", 2)):
        weights = torch.randn(3, 3, generator=torch.Generator().manual_seed(seed))
        save_file({"model.diffusion_model.w": weights, "betas": weights[0].clone()}, folder / f"{name}.safetensors")
    return folder


def test_merge_prints_the_new_checkpoint(data_dir, capsys):
    folder = write_models(data_dir)
    code = main(
        ["--data-dir", str(data_dir), "merge", "-a", "a", "-b", "b.safetensors", "--multiplier", "0.5"]
        + ["--save-as-half", "--custom-name", "half", "--discard-weights", "^betas$"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == str(folder / "half.safetensors")
    merged = load_file(folder / "half.safetensors")
    a, b = load_file(folder / "a.safetensors"), load_file(folder / "b.safetensors")
    key = "model.diffusion_model.w"
    assert list(merged) == [key]
    assert torch.equal(merged[key], (0.5 * a[key] + 0.5 * b[key]).half())


def test_bad_values_name_their_flag(data_dir, capsys):
    write_models(data_dir)
    assert main(["--data-dir", str(data_dir), "merge", "-a", "a", "-b", "b", "--interp-method", "Average"]) == 2
    assert "error: --interp-method: " in capsys.readouterr().err
    assert main(["--data-dir", str(data_dir), "merge", "-a", "a", "-b", "nope"]) == 2
    assert "error: --secondary-model-name: " in capsys.readouterr().err
