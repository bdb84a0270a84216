"""Model files are read tensor by tensor into the dtype each weight will run in, equal to safetensors' own reader."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdstudio.errors import ModelLoadError
from sdstudio.models.state_dict import load_state_dict

TENSORS = {
    "model.diffusion_model.w": torch.randn(4, 3, 3, 3).half(),
    "first_stage_model.w": torch.randn(5, 2).half(),
    "cond_stage_model.bf": torch.randn(7).bfloat16(),
    "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    "flags": torch.tensor([True, False]),
    "empty": torch.zeros(0, 3),
    "scalar": torch.tensor(2.5),
}


def test_every_dtype_and_shape_reads_as_safetensors_reads_it(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(TENSORS, path)
    ours, theirs = load_state_dict(path), load_file(path)
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert ours[key].dtype == tensor.dtype and ours[key].shape == tensor.shape
        assert torch.equal(ours[key], tensor)


def test_each_weight_is_cast_as_it_is_read_and_owns_its_memory(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(TENSORS, path)

    def dtype_for(key: str) -> torch.dtype:
        return torch.float32 if key.startswith("first_stage_model.") else torch.bfloat16

    read = load_state_dict(path, float_dtype=dtype_for)
    assert read["model.diffusion_model.w"].dtype == torch.bfloat16
    assert read["first_stage_model.w"].dtype == torch.float32
    assert torch.equal(read["first_stage_model.w"], TENSORS["first_stage_model.w"].float())
    assert read["ids"].dtype == torch.int64  # only floating-point weights are cast
    pointers = {tensor.untyped_storage().data_ptr() for tensor in read.values() if tensor.numel()}
    assert len(pointers) == sum(1 for tensor in read.values() if tensor.numel())  # no two share a buffer


def test_a_file_cut_short_is_refused_naming_it(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file(TENSORS, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match="cut.safetensors"):
        load_state_dict(path)
