"""Model names mean the same in every command; unusable model files say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from sdstudio.cli.main import main
from sdstudio.models.detect import bundled_tiny_model
from sdstudio.models.hashes import sha256_of_file


@pytest.fixture
def tiny():
    path = bundled_tiny_model()
    if path is None:
        pytest.skip("bundled tiny model not present")
    return path


def test_model_chosen_by_short_hash_gets_its_native_size_and_a_refused_request_writes_nothing(tiny, tmp_path, capsys):
    short_hash = sha256_of_file(tiny)[:10]
    data = tmp_path / "data"
    refused = main(["--data-dir", str(data), "txt2img", "--model", short_hash, "--steps", "0", "a cat"])
    assert refused == 2 and capsys.readouterr().err.startswith("error: steps:")
    assert not data.exists()  # the hash lookup kept its result in memory
    argv = ["--data-dir", str(data), "txt2img", "--model", short_hash, "--steps", "1", "--skip_grid", "a cat"]
    assert main([*argv, "--outdir", str(tmp_path / "out")]) == 0
    image = Path(capsys.readouterr().out.split("\n")[0])
    with Image.open(image) as saved:
        assert saved.size == (64, 64)  # the tiny model's native size, as for `--model sdstudio-tiny`
    cached = json.loads((data / "cache" / "hashes.json").read_text())  # hashed once, cached after validation
    assert any(row["sha256"].startswith(short_hash) for row in cached.values())


def test_train_lora_takes_the_base_by_the_name_models_list_shows(data_dir, tiny, tmp_path, capsys):
    assert main(["--data-dir", str(data_dir), "models", "list", "--type", "checkpoint", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["model_name"] for row in listed] == ["sdstudio-tiny"]
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(images / "red.png")
    (images / "red.txt").write_text("a red square")
    argv = ["--data-dir", str(data_dir), "train-lora", "--data", str(images), "--output", "red", "--no-progress"]
    argv += ["--resolution", "64", "--max-train-steps", "1", "--rank", "2"]
    assert main([*argv, "--base", "sdstudio-tiny"]) == 0, capsys.readouterr().err
    assert (data_dir / "models" / "Lora" / "red.safetensors").is_file()
    capsys.readouterr()
    assert main([*argv, "--base", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: base:") and "sdstudio-tiny" in err  # names the ones there are


def test_models_list_shows_an_unreadable_upscaler_as_unusable_with_the_reason(data_dir, capsys):
    folder = data_dir / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    (folder / "broken.pth").write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    assert main(["--data-dir", str(data_dir), "models", "list", "--type", "upscaler"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "broken" in line and "unusable: " in line and "broken." in line.split("unusable: ")[1]
    assert main(["--data-dir", str(data_dir), "models", "list", "--type", "upscaler", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["usable"] is False and "broken." in row["reason"]


def test_unknown_hires_upscaler_lists_the_latent_modes_too(data_dir, tiny, capsys):
    argv = ["--data-dir", str(data_dir), "txt2img", "--hires", "--hr-upscaler", "Bogus", "--steps", "1", "x"]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: hr_upscaler: unknown upscaler 'Bogus'") and err.count("\n") == 1
    assert "Latent (nearest-exact)" in err and "Lanczos" in err and "Nearest" in err
