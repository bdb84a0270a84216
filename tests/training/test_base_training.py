"""train-base: all four phases on a micro model, export through the real loader, exact resume, CLI errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sdstudio.errors import InvalidRequest
from sdstudio.training.base_training import BaseTrainingConfig, train_base
from sdstudio.training.tiny_model import micro_ldm_config


def micro_config(out, **changes) -> BaseTrainingConfig:
    values = dict(
        out_dir=out,
        unet_steps=4,
        vae_steps=2,
        decoder_steps=1,
        refine_steps=2,
        batch_size=4,
        vae_batch_size=2,
        save_every=1,
        sample_every=2,
        sample_steps=3,
        architecture=micro_ldm_config(),
    )
    return BaseTrainingConfig(**(values | changes))


class StopAt(Exception):
    pass


def test_train_base_exports_a_checkpoint_the_loader_reads(tmp_path):
    lines = []
    result = train_base(micro_config(tmp_path / "run"), log=lines.append)

    assert result.steps == {"vae": 2, "unet": 4, "decoder": 1, "refine": 2}
    assert result.checkpoint.name == "sdstudio-tiny.safetensors"
    assert result.checkpoint.with_suffix(".yaml").is_file()
    assert [p.name for p in result.sample_grids] == ["unet_000002.png", "done_000000.png"]
    assert all(p.is_file() for p in result.sample_grids)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "unet 1 loss" in log and "vae done: latent std" in log and "refine 1 loss" in log

    from sdstudio.models.detect import detect_architecture
    from sdstudio.models.loader import load_checkpoint

    tensors = load_file(result.checkpoint)
    assert any(k.startswith("model.diffusion_model.") for k in tensors)
    assert any(k.startswith("first_stage_model.") for k in tensors)
    assert any(k.startswith("cond_stage_model.transformer.") for k in tensors)
    assert detect_architecture(tensors).family == "sd1"
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.unet.config.cross_attention_dim == 32
    import yaml

    scale = yaml.safe_load(result.checkpoint.with_suffix(".yaml").read_text())["model"]["params"]["scale_factor"]
    assert scale != 1.0 and loaded.vae_scaling_factor == pytest.approx(scale)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    straight = train_base(micro_config(tmp_path / "straight"), log=lambda line: None)

    def stop_after_first_samples(line: str) -> None:
        if line.startswith("samples:"):
            raise StopAt(line)

    with pytest.raises(StopAt):
        train_base(micro_config(tmp_path / "resumed"), log=stop_after_first_samples)
    with pytest.raises(InvalidRequest, match="--resume"):
        train_base(micro_config(tmp_path / "resumed"), log=lambda line: None)
    lines = []
    resumed = train_base(micro_config(tmp_path / "resumed"), resume=True, log=lines.append)

    assert "resuming at unet step 2" in lines
    a, b = load_file(straight.checkpoint), load_file(resumed.checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_refined_later_matches_a_run_that_refined_straight_away(tmp_path):
    # How the shipped model was made: a run finished without refinement, then resumed with refine steps.
    straight = train_base(micro_config(tmp_path / "straight"), log=lambda line: None)
    train_base(micro_config(tmp_path / "later", refine_steps=0), log=lambda line: None)
    unrefined_unet = torch.load(tmp_path / "later" / "state.pt", weights_only=True)["unet"]
    lines = []
    refined = train_base(micro_config(tmp_path / "later"), resume=True, log=lines.append)

    assert "extending the finished run: refine from step 0 to 2" in lines and refined.steps == straight.steps
    a, b = load_file(straight.checkpoint), load_file(refined.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The live (fp32) UNet weights: the same after both routes, and moved by the refine steps.
    live_unet = [torch.load(tmp_path / name / "state.pt", weights_only=True)["unet"] for name in ("straight", "later")]
    assert all(torch.equal(live_unet[0][k], live_unet[1][k]) for k in live_unet[0])
    assert not all(torch.equal(live_unet[0][k], v) for k, v in unrefined_unet.items())


def test_longer_decoder_phase_on_a_finished_run_changes_only_the_decoder(tmp_path):
    first = load_file(train_base(micro_config(tmp_path / "run"), log=lambda line: None).checkpoint)
    lines = []
    longer = train_base(micro_config(tmp_path / "run", decoder_steps=3), resume=True, log=lines.append)
    second = load_file(longer.checkpoint)

    assert "extending the finished run: decoder from step 1 to 3" in lines
    assert longer.steps == {"vae": 2, "unet": 4, "decoder": 3, "refine": 2}
    changed = {k for k in first if not torch.equal(first[k], second[k])}
    assert changed and all(
        k.startswith(("first_stage_model.decoder.", "first_stage_model.post_quant_conv.")) for k in changed
    )


def test_cli_refuses_to_overwrite_a_run_without_resume(tmp_path):
    command = [
        sys.executable,
        "-m",
        "sdstudio.cli.main",
        "train-base",
        "--out",
        str(tmp_path / "run"),
        "--size",
        "micro",
        "--steps",
        "1",
        "--vae-steps",
        "1",
        "--decoder-steps",
        "0",
        "--refine-steps",
        "1",
        "--batch-size",
        "2",
        "--sample-every",
        "0",
    ]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "checkpoint:" in first.stdout and "unet 1" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode != 0
    assert "--resume" in again.stderr and "Traceback" not in again.stderr
    bad = subprocess.run([*command[:4], str(tmp_path / "other"), "--steps", "-1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "steps" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_defaults_are_the_training_defaults(tmp_path):
    """`sdstudio train-base --out DIR` must train what BaseTrainingConfig (and the README) describe."""
    from sdstudio.cli.main import build_parser
    from sdstudio.cli.train_base import training_config

    from_cli = training_config(build_parser().parse_args(["train-base", "--out", str(tmp_path)]))
    assert from_cli == BaseTrainingConfig(out_dir=tmp_path)
