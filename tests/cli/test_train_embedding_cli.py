"""`sdstudio create-embedding` / `train-embedding` on the bundled model: files written, errors naming flags."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sdstudio.cli.main import main
from sdstudio.prompts.embeddings import load_embedding_file


def test_create_then_train_a_few_steps(data_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        pixels = np.full((64, 64, 3), 245, dtype=np.uint8)
        pixels[20:44, 20:44] = (140, 40, 200)
        Image.fromarray(pixels).save(images / f"{i}-purple square.png")
    root = ["--data-dir", str(data_dir)]
    assert main([*root, "create-embedding", "--name", "purp", "--init-text", "red", "--vectors", "2"]) == 0
    path = data_dir / "embeddings" / "purp.pt"
    assert capsys.readouterr().out.strip() == str(path)
    code = main(
        [*root, "train-embedding", "--name", "purp", "--data", str(images), "--steps", "2", "--width", "64"]
        + ["--height", "64", "--template", "subject_filewords.txt", "--save-every", "0", "--image-every", "0"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == str(path) and load_embedding_file(path).step == 2
    assert (data_dir / "textual_inversion_templates" / "subject_filewords.txt").is_file()


def test_errors_name_the_flag(data_dir, tmp_path, capsys):
    root = ["--data-dir", str(data_dir)]
    assert main([*root, "create-embedding", "--name", "purp", "--vectors", "0"]) == 2
    assert "error: --vectors: " in capsys.readouterr().err
    assert main([*root, "train-embedding", "--name", "nope", "--data", str(tmp_path)]) == 2
    assert "error: --name: " in capsys.readouterr().err
    assert main([*root, "create-embedding", "--name", "purp"]) == 0
    assert main([*root, "train-embedding", "--name", "purp", "--data", str(tmp_path), "--learn-rate", "x"]) == 2
    assert "error: --learn-rate: " in capsys.readouterr().err
    assert main([*root, "train-embedding", "--name", "purp", "--data", str(tmp_path), "--template", "no"]) == 2
    assert "error: --template: " in capsys.readouterr().err
