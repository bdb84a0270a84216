"""Discovery, A1111 hashes, the hash cache, cleanup of stray files, and the models CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.config import DataPaths
from sdstudio.errors import NotFound
from sdstudio.models.hashes import HashCache, addnet_hash_safetensors, legacy_model_hash, sha256_of_file
from sdstudio.models.registry import ModelRegistry


def write_safetensors(path, metadata=None, size=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.arange(size, dtype=torch.float32)}, str(path), metadata=metadata)
    return path


def test_hashes_match_their_definitions(tmp_path):
    data = os.urandom(0x100000 + 0x10000 + 123)
    path = tmp_path / "big.ckpt"
    path.write_bytes(data)
    assert sha256_of_file(path) == hashlib.sha256(data).hexdigest()
    assert legacy_model_hash(path) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    lora = write_safetensors(tmp_path / "l.safetensors", {"ss_network_dim": "4"})
    raw = lora.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert addnet_hash_safetensors(lora) == hashlib.sha256(raw[8 + header :]).hexdigest()


def test_hash_cache_survives_restart_and_notices_changes(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors")
    cache_file = tmp_path / "cache" / "hashes.json"
    first = HashCache(cache_file).hashes(path)
    assert json.loads(cache_file.read_text())[str(path.resolve())]["sha256"] == first.sha256
    assert HashCache(cache_file).cached(path) == first, "a new process reads the cache"
    write_safetensors(path, size=8)
    assert HashCache(cache_file).cached(path) is None
    assert HashCache(cache_file).hashes(path).sha256 == sha256_of_file(path)


def test_listing_every_kind_with_titles_metadata_previews(data_dir):
    paths = DataPaths(data_dir).ensure()
    write_safetensors(data_dir / "models/Stable-diffusion/sub/dream.safetensors")
    write_safetensors(data_dir / "models/Lora/style.safetensors", {"ss_network_dim": "8", "ss_output_name": "style"})
    (data_dir / "models/Lora/style.preview.png").write_bytes(b"png")
    write_safetensors(data_dir / "models/VAE/v.safetensors")
    write_safetensors(data_dir / "embeddings/deep/emb.safetensors")
    write_safetensors(data_dir / "models/ESRGAN/4x.safetensors")
    write_safetensors(data_dir / "models/Codeformer/cf.safetensors")
    torch.save({768: ({}, {}), "name": "hn"}, data_dir / "models/hypernetworks/hn.pt")
    registry = ModelRegistry(paths)
    checkpoint = registry.find_checkpoint("dream")
    assert checkpoint.name == "sub/dream.safetensors" and checkpoint.model_name == "sub_dream"
    assert checkpoint.title == f"sub/dream.safetensors [{sha256_of_file(checkpoint.path)[:10]}]"
    for query in (
        checkpoint.title,
        checkpoint.shorthash,
        checkpoint.sha256,
        "sub/dream.safetensors",
        str(checkpoint.path),
    ):
        assert registry.find_checkpoint(query).path == checkpoint.path
    lora = registry.list("lora")[0]
    assert lora.metadata["ss_network_dim"] == "8" and lora.preview.name == "style.preview.png"
    assert [e.name for e in registry.list("embedding")] == ["deep/emb.safetensors"]
    assert {e.type for e in registry.list_all()} == {
        "checkpoint",
        "lora",
        "vae",
        "embedding",
        "upscaler",
        "face_restorer",
        "hypernetwork",
    }
    with pytest.raises(NotFound, match="dream"):
        registry.find_checkpoint("nope")


def test_stray_checkpoints_moved_never_overwriting(data_dir):
    paths = DataPaths(data_dir).ensure()
    write_safetensors(data_dir / "models/loose.safetensors")
    write_safetensors(data_dir / "models/taken.safetensors", size=8)
    kept = write_safetensors(data_dir / "models/Stable-diffusion/taken.safetensors")
    before = kept.read_bytes()
    names = [e.name for e in ModelRegistry(paths).list("checkpoint")]
    assert "loose.safetensors" in names
    assert (data_dir / "models/Stable-diffusion/loose.safetensors").is_file()
    assert not (data_dir / "models/loose.safetensors").exists()
    assert kept.read_bytes() == before and (data_dir / "models/taken.safetensors").is_file()


def test_models_list_json_cli(data_dir):
    write_safetensors(data_dir / "models/Lora/x.safetensors", {"ss_network_alpha": "1"})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdstudio.cli.main",
            "--data-dir",
            str(data_dir),
            "models",
            "list",
            "--json",
            "--type",
            "lora",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = json.loads(result.stdout)
    assert len(entries) == 1
    entry = entries[0]
    assert {"type", "name", "title", "path", "sha256", "shorthash", "metadata"} <= set(entry)
    assert os.path.isabs(entry["path"]) and entry["metadata"]["ss_network_alpha"] == "1"
    assert entry["shorthash"] == entry["sha256"][:10]


def test_a_refused_pickle_replaced_by_a_good_file_is_usable_at_the_next_listing(tmp_path):
    # Listings remember each file's check while it is unchanged; a changed file is checked again.
    import torch
    from malicious_files import write_malicious

    from sdstudio.config import DataPaths
    from sdstudio.models.registry import ModelRegistry

    paths = DataPaths(tmp_path / "data").ensure()
    folder = paths.folder("vae")
    bad = write_malicious(folder / "swap.pt", tmp_path / "ran", "zip")
    registry = ModelRegistry(paths)
    [listed] = registry.list("vae", with_hashes=False)
    assert not listed.usable and "refused" in listed.problem.lower()
    assert [e.usable for e in registry.list("vae", with_hashes=False)] == [False]  # the same verdict, remembered
    torch.save({"decoder.conv_in.weight": torch.zeros(1)}, bad)
    [again] = registry.list("vae", with_hashes=False)
    assert again.usable and again.problem is None
    assert not (tmp_path / "ran").exists()
