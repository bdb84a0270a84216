"""LoRA training: a few steps on a micro model, saved in kohya layout, loadable, resumable."""

from __future__ import annotations

import json
import re

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from sdstudio.extensions.lora import LoraActivation, LoraLibrary, list_loras
from sdstudio.training.lora_dataset import scan_training_folder, tag_frequency
from sdstudio.training.lora_training import LoraTrainingConfig, sample_images, train_lora

KOHYA_KEY = re.compile(r"^lora_(unet|te)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")


def config(**overrides) -> LoraTrainingConfig:
    values = dict(
        output_name="star",
        resolution=32,
        max_train_steps=4,
        train_batch_size=2,
        rank=4,
        network_alpha=2.0,
        learning_rate=1e-2,
        seed=7,
    )
    values.update(overrides)
    return LoraTrainingConfig(**values)


def test_folder_repeats_and_captions_follow_kohya(dataset):
    images = scan_training_folder(dataset, repeats=2)
    by_name = {i.path.name: i for i in images}
    assert by_name["0.png"].repeats == 3 and by_name["0.png"].caption == "a red star, on a blue background"
    assert by_name["plain.png"].repeats == 2 and by_name["plain.png"].caption == ""
    assert tag_frequency(images)["3_star"] == {"a red star": 3, "on a blue background": 3}


def test_trained_lora_has_kohya_keys_and_metadata_and_changes_the_model(base, dataset, tmp_path):
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    lora_dir = tmp_path / "models" / "Lora"
    settings = config(train_text_encoder=True, sample_prompts=["a red star"], sample_every=2, sample_steps=2)
    result = train_lora(
        base, scan_training_folder(dataset), settings, lora_dir, samples_dir=tmp_path / "samples", progress_bar=False
    )
    assert result.path == lora_dir / "star.safetensors" and result.steps == 4 and len(result.losses) == 4
    assert [p.name for p in result.sample_paths] == ["star_000002_00.png", "star_000004_00.png"]
    assert all(Image.open(p).size == (32, 32) for p in result.sample_paths)
    # training leaves the base model as it was
    after = base.unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)

    tensors = load_file(str(result.path))
    assert all(KOHYA_KEY.match(k) for k in tensors), [k for k in tensors if not KOHYA_KEY.match(k)][:3]
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    for module in modules:
        assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= tensors.keys()
    assert any(re.match(r"lora_unet_down_blocks_\d_attentions_0_transformer_blocks_0_attn1_to_q\.", k) for k in tensors)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in tensors)
    with safe_open(str(result.path), "pt") as handle:
        meta = handle.metadata()
    assert (
        meta["ss_network_module"] == "networks.lora"
        and meta["ss_network_dim"] == "4"
        and meta["ss_network_alpha"] == "2.0"
    )
    assert (
        meta["ss_max_train_steps"] == "4" and meta["ss_resolution"] == "(32, 32)" and meta["ss_output_name"] == "star"
    )
    assert json.loads(meta["ss_tag_frequency"])["3_star"]["a red star"] == 3

    # It loads back through the LoRA library and changes the UNet's prediction.
    library = LoraLibrary(lora_dir)
    listed = list_loras(library)
    assert listed[0]["name"] == "star" and listed[0]["metadata"]["ss_tag_frequency"]["3_star"]["a red star"] == 3
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        plain = base.unet(x, torch.tensor([400]), encoder_hidden_states=ctx).sample
        with library.apply(base.unet, [base.text_encoder], [LoraActivation("star")]) as report:
            with_lora = base.unet(x, torch.tensor([400]), encoder_hidden_states=ctx).sample
        again = base.unet(x, torch.tensor([400]), encoder_hidden_states=ctx).sample
    assert not report.warnings and report.adapter_modules > 0
    assert not torch.allclose(plain, with_lora) and torch.equal(plain, again)
    assert report.hashes["star"] == meta["sshs_model_hash"][:12]  # A1111's addnet short hash


def test_resumed_training_ends_where_an_uninterrupted_run_does(base, dataset, tmp_path):
    images = scan_training_folder(dataset)
    straight = train_lora(base, images, config(), tmp_path / "a", state_dir=tmp_path / "sa", progress_bar=False)
    train_lora(base, images, config(max_train_steps=2), tmp_path / "b", state_dir=tmp_path / "sb", progress_bar=False)
    resumed = train_lora(
        base, images, config(), tmp_path / "b", state_dir=tmp_path / "sb", resume=True, progress_bar=False
    )
    assert resumed.resumed_from == 2 and resumed.steps == 4
    a, b = load_file(str(straight.path)), load_file(str(resumed.path))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_sample_images_are_fixed_by_the_seed_and_count_up_from_it(base):
    def pixels(images):
        return [np.asarray(image) for image in images]

    first = pixels(sample_images(base, ["a red star", "a red star"], 32, seed=3, steps=3))
    again = pixels(sample_images(base, ["a red star", "a red star"], 32, seed=3, steps=3))
    next_seed = pixels(sample_images(base, ["a red star"], 32, seed=4, steps=3))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert np.array_equal(first[1], next_seed[0]) and not np.array_equal(first[0], first[1])


def test_cli_reports_a_missing_data_folder(tmp_path, capsys):
    from sdstudio.cli.main import main

    code = main(
        [
            "--data-dir",
            str(tmp_path / "d"),
            "train-lora",
            "--data",
            str(tmp_path / "nope"),
            "--base",
            "x.safetensors",
            "--output",
            "n",
        ]
    )
    assert code == 2
    assert "data" in capsys.readouterr().err


def test_cli_trains_from_a_checkpoint_file_into_models_lora(base, dataset, tmp_path, capsys):
    from sdstudio.cli.main import main
    from sdstudio.models import saver

    checkpoint = tmp_path / "micro.safetensors"
    heads = base.text_encoder.config.num_attention_heads
    yaml_text = saver.ldm_yaml_for(
        base.unet.config, base.vae.config, scale_factor=base.vae_scaling_factor, text_heads=heads
    )
    saver.save_checkpoint(checkpoint, unet=base.unet, vae=base.vae, text_encoder=base.text_encoder, yaml_text=yaml_text)
    data_dir = tmp_path / "home"
    code = main(
        [
            "--data-dir",
            str(data_dir),
            "train-lora",
            "--data",
            str(dataset),
            "--base",
            str(checkpoint),
            "--output",
            "cli_star",
            "--resolution",
            "32",
            "--max-train-steps",
            "2",
            "--train-batch-size",
            "2",
            "--rank",
            "2",
            "--network-alpha",
            "1",
            "--save-every",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    saved = data_dir / "models" / "Lora" / "cli_star.safetensors"
    assert saved.is_file() and (data_dir / "models" / "Lora" / "cli_star-step00000001.safetensors").is_file()
    with safe_open(str(saved), "pt") as handle:
        meta = handle.metadata()
    assert (
        meta["ss_sd_model_name"] == "micro.safetensors"
        and len(meta["ss_new_sd_model_hash"]) == 64
        and len(meta["ss_sd_model_hash"]) == 8
    )
    assert "<lora:cli_star:1>" in capsys.readouterr().out
    # --resume continues from the saved state
    code = main(
        [
            "--data-dir",
            str(data_dir),
            "train-lora",
            "--data",
            str(dataset),
            "--base",
            str(checkpoint),
            "--output",
            "cli_star",
            "--resolution",
            "32",
            "--max-train-steps",
            "3",
            "--train-batch-size",
            "2",
            "--rank",
            "2",
            "--network-alpha",
            "1",
            "--resume",
            "--no-progress",
        ]
    )
    assert code == 0
    with safe_open(str(saved), "pt") as handle:
        assert handle.metadata()["ss_steps"] == "3"
