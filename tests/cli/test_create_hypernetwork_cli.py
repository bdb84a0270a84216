"""`sdstudio create-hypernetwork`: A1111's Create hypernetwork fields as flags; a bad value names its flag."""

from __future__ import annotations

import torch

from sdstudio.cli.main import main


def test_create_hypernetwork_writes_a1111s_file_and_prints_its_path(data_dir, capsys):
    code = main(
        ["--data-dir", str(data_dir), "create-hypernetwork", "ink", "--enable-sizes", "768,1024"]
        + ["--layer-structure", "1, 1.5, 1", "--activation-func", "relu", "--add-layer-norm"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    path = data_dir / "models" / "hypernetworks" / "ink.pt"
    assert out.strip() == str(path)
    saved = torch.load(path, weights_only=True)
    assert [k for k in saved if isinstance(k, int)] == [768, 1024]
    assert saved["layer_structure"] == [1, 1.5, 1] and saved["activation_func"] == "relu" and saved["is_layer_norm"]
    assert saved[1024][1]["linear.0.weight"].shape == (1536, 1024)


def test_bad_values_and_a_taken_name_name_their_flag(data_dir, capsys):
    args = ["--data-dir", str(data_dir), "create-hypernetwork"]
    assert main([*args, "ink", "--layer-structure", "1, 2"]) == 2
    assert "error: --layer-structure: " in capsys.readouterr().err
    assert main([*args, "ink", "--enable-sizes", "768,big"]) == 2
    assert "error: --enable-sizes: " in capsys.readouterr().err
    assert main([*args, "ink", "--weight-init", "Zeros"]) == 2
    assert "error: --weight-init: " in capsys.readouterr().err
    assert main([*args, "ink"]) == 0
    capsys.readouterr()
    assert main([*args, "ink"]) == 2
    assert "error: NAME: ink.pt already exists" in capsys.readouterr().err
    assert main([*args, "ink", "--overwrite-old"]) == 0
