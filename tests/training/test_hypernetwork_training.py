"""Hypernetwork training on the micro model: weights learn, the base model is untouched, A1111's files, exact resume."""

from __future__ import annotations

import torch

from sdstudio.extensions.hypernetwork import Hypernetwork, HypernetworkStructure, hypernetworks_applied
from sdstudio.extensions.hypernetwork.library import attention_widths
from sdstudio.extensions.hypernetwork.network import load_hypernetwork_file
from sdstudio.training.hypernetwork_training import (
    HypernetworkTrainingConfig,
    optimizer_file,
    short_hash,
    train_hypernetwork,
)
from sdstudio.training.lora_dataset import scan_training_folder


def new_file(base, path, dropout=(0.0, 0.3, 0.0)):
    structure = HypernetworkStructure(
        layer_structure=(1, 2, 1), activation_func="relu", dropout_structure=dropout, weight_init="XavierNormal"
    )
    Hypernetwork.new("star", attention_widths(base.unet), structure, use_dropout=any(dropout)).save(path)
    return path


def run(base, dataset, path, state_dir, steps, interrupted=None):
    net = load_hypernetwork_file(path)
    return train_hypernetwork(
        base,
        scan_training_folder(dataset),
        net,
        path,
        lambda unet: hypernetworks_applied(unet, [(net, 1.0)]),
        HypernetworkTrainingConfig(learn_rate=1e-3, batch_size=2, steps=steps, resolution=32, save_every=2, seed=3),
        state_dir=state_dir,
        interrupted=interrupted,
    )


def test_training_changes_the_hypernetwork_only_and_writes_a1111s_files(base, dataset, tmp_path):
    path = new_file(base, tmp_path / "star.pt")
    before = load_hypernetwork_file(path)
    unet_before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    result = run(base, dataset, path, tmp_path / "state", steps=3)
    assert result.steps == 3 and len(result.losses) == 3 and all(loss > 0 for loss in result.losses)
    after = load_hypernetwork_file(path)
    assert after.step == 3
    changed = [not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True)]
    assert any(changed)
    assert all(torch.equal(v, unet_before[k]) for k, v in base.unet.state_dict().items())
    assert not any(module._forward_pre_hooks for module in base.unet.modules())
    assert not any(p.requires_grad for p in base.unet.parameters())
    optim = torch.load(optimizer_file(path), weights_only=True)
    assert optim["optimizer_name"] == "AdamW" and optim["hash"] == short_hash(path)
    assert optim["optimizer_state_dict"]["state"]


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(base, dataset, tmp_path):
    straight = new_file(base, tmp_path / "a" / "star.pt")
    untrained = straight.read_bytes()
    run(base, dataset, straight, tmp_path / "a" / "state", steps=4)
    resumed = tmp_path / "b" / "star.pt"
    resumed.parent.mkdir()
    resumed.write_bytes(untrained)
    calls = []
    first = run(
        base, dataset, resumed, tmp_path / "b" / "state", steps=4, interrupted=lambda: calls.append(1) or len(calls) > 2
    )
    assert first.interrupted and first.steps == 2 and load_hypernetwork_file(resumed).step == 2
    second = run(base, dataset, resumed, tmp_path / "b" / "state", steps=4)
    assert second.resumed_from == 2 and second.steps == 4
    a, b = load_hypernetwork_file(straight), load_hypernetwork_file(resumed)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
