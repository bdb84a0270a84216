"""A checkpoint's native size: what its yaml says, else its family's (SDXL 1024), else A1111's 512."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.config import DataPaths
from sdstudio.errors import NotFound
from sdstudio.models.detect import bundled_tiny_model, checkpoint_native_size
from sdstudio.models.hashes import sha256_of_file
from sdstudio.models.registry import ModelRegistry


def _keys_only_checkpoint(path, text_key: str):
    """A .safetensors file with a UNet key and one text-encoder key: enough for the family, not to load."""
    save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1, 4, 1, 1), text_key: torch.zeros(1)}, path
    )
    return path


def test_the_family_decides_without_a_yaml(tmp_path):
    sdxl = _keys_only_checkpoint(tmp_path / "xl.safetensors", "conditioner.embedders.1.model.transformer.x")
    sd1 = _keys_only_checkpoint(tmp_path / "sd15.safetensors", "cond_stage_model.transformer.x")
    assert checkpoint_native_size(sdxl) == 1024
    assert checkpoint_native_size(sd1) == 512
    (tmp_path / "old.ckpt").write_bytes(b"a pickle is not opened to guess a size")
    assert checkpoint_native_size(tmp_path / "old.ckpt") == 512


def test_a_yaml_beside_the_checkpoint_says_its_size(tmp_path):
    tiny = bundled_tiny_model()
    if tiny is None:
        pytest.skip("bundled tiny model not present")
    assert checkpoint_native_size(tiny) == 64  # 16 latent pixels, a VAE that down-samples 4x
    wide = shutil.copy(tiny, tmp_path / "wide.safetensors")
    yaml_text = tiny.with_suffix(".yaml").read_text().replace("    image_size: 16\n", "    image_size: 32\n", 1)
    (tmp_path / "wide.yaml").write_text(yaml_text)
    assert checkpoint_native_size(wide) == 128


def test_the_registry_finds_the_checkpoint_by_name_title_or_short_hash(tmp_path):
    tiny = bundled_tiny_model()
    if tiny is None:
        pytest.skip("bundled tiny model not present")
    registry = ModelRegistry(DataPaths(tmp_path / "data"), save_hashes=False)
    short_hash = sha256_of_file(tiny)[:10]
    for query in (
        "sdstudio-tiny",
        "sdstudio-tiny.safetensors",
        f"sdstudio-tiny.safetensors [{short_hash}]",
        short_hash,
    ):
        assert registry.native_size(query) == 64, query
    assert registry.native_size() == 64  # no choice: the default checkpoint
    with pytest.raises(NotFound):
        registry.native_size("no-such-model")
