"""A broken model file (empty, cut short, a header claiming more than the file holds) is listed as unusable
with its reason, is never hashed or loaded, and never stops the other files from being listed (#19 class 5)."""

from __future__ import annotations

import json
import struct

import pytest
from bad_files import write_bad_model_files, write_good_safetensors

from sdstudio.cli.main import main
from sdstudio.config import DataPaths
from sdstudio.errors import ModelLoadError
from sdstudio.models.hashes import addnet_hash_safetensors
from sdstudio.models.registry import ModelRegistry
from sdstudio.models.state_dict import read_safetensors_header

FOLDERS = {
    "checkpoint": "models/Stable-diffusion",
    "vae": "models/VAE",
    "lora": "models/Lora",
    "embedding": "embeddings",
}


@pytest.fixture
def bad_data_dir(data_dir):
    """Every kind of broken file in every model folder, plus one good file in each."""
    expected = {}
    for kind, folder in FOLDERS.items():
        suffixes = (".safetensors", ".ckpt") if kind != "embedding" else (".safetensors",)
        expected[kind] = write_bad_model_files(data_dir / folder, suffixes)
        write_good_safetensors(data_dir / folder / "good.safetensors")
    return data_dir, expected


def test_registry_lists_bad_files_with_their_reason_and_the_good_ones_usable(bad_data_dir):
    data_dir, expected = bad_data_dir
    registry = ModelRegistry(DataPaths(data_dir).ensure())
    for kind, bad in expected.items():
        entries = {e.name: e for e in registry.list(kind)}  # hashes too: a bad file must not break them
        assert entries["good.safetensors"].usable and entries["good.safetensors"].sha256, kind
        for name, reason in bad.items():
            assert not entries[name].usable and reason in entries[name].problem, (kind, name, entries[name].problem)
            assert entries[name].sha256 is None  # not hashed
        usable = [e.name for e in registry.list(kind, include_unusable=False)]
        assert not set(bad) & set(usable)
    with pytest.raises(ModelLoadError, match=r"cut-short\.safetensors cannot be used: cut short"):
        registry.find_usable("checkpoint", "cut-short.safetensors")
    assert registry.default_checkpoint().usable  # the first usable one, never a broken file


def test_a_header_claiming_more_than_the_file_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "claims.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(ModelLoadError, match="header claims 1152921504606846976 bytes but the file has only 10"):
        read_safetensors_header(path)
    with pytest.raises(ModelLoadError, match="header claims"):  # was OSError: [Errno 22] Invalid argument
        addnet_hash_safetensors(path)


def test_models_list_shows_each_bad_file_as_unusable_with_the_reason(bad_data_dir, capsys):
    data_dir, expected = bad_data_dir
    assert main(["--data-dir", str(data_dir), "models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for kind, bad in expected.items():
        for name, reason in bad.items():
            (line,) = [ln for ln in lines if ln.startswith(kind) and f"/{name}" in ln]
            assert "unusable: " in line and reason in line.split("unusable: ")[1], line
    assert main(["--data-dir", str(data_dir), "models", "list", "--type", "vae", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["good.safetensors"]["usable"] is True and rows["good.safetensors"]["reason"] is None
    assert rows["empty.ckpt"]["usable"] is False and rows["empty.ckpt"]["reason"] == "empty file (0 bytes)"
    assert main(["--data-dir", str(data_dir), "models", "hash", "--type", "lora"]) == 0
    captured = capsys.readouterr()
    assert "good.safetensors" in captured.out and "empty.ckpt: not hashed, unusable: empty file" in captured.err
