"""Pickled model files: tensors load; anything that would run code is refused before it runs."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from malicious_files import FORMS, Payload, unscannable_pickle, write_malicious

from sdstudio.errors import UnsafeFileError
from sdstudio.models.safe_pickle import forbidden_globals, safe_load
from sdstudio.models.state_dict import load_state_dict


def test_plain_tensors_and_containers_load(tmp_path):
    data = {
        "state_dict": OrderedDict(a=torch.arange(4.0), b=torch.ones(2, 2, dtype=torch.float16)),
        "epoch": 3,
        "names": ["x", "y"],
        "shape": torch.Size([2, 2]),
    }
    path = tmp_path / "ok.ckpt"
    torch.save(data, path)
    loaded = safe_load(path)
    assert torch.equal(loaded["state_dict"]["a"], torch.arange(4.0)) and loaded["epoch"] == 3
    assert set(load_state_dict(path)) == {"a", "b"}


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("legacy", [False, True])
def test_files_saved_with_any_pickle_protocol_load(tmp_path, protocol, legacy):
    # Protocol 4+ names globals with STACK_GLOBAL and reuses a module name ("torch") from the memo.
    data = {"a": torch.arange(4.0), "b": torch.ones(2, dtype=torch.float16), "c": torch.zeros(3, dtype=torch.int64)}
    path = tmp_path / "ok.pt"
    torch.save(
        {"state_dict": OrderedDict(data), "shape": torch.Size([2])},
        path,
        pickle_protocol=protocol,
        _use_new_zipfile_serialization=not legacy,
    )
    loaded = safe_load(path)
    assert torch.equal(loaded["state_dict"]["b"], data["b"]) and loaded["shape"] == torch.Size([2])


@pytest.mark.parametrize("form", FORMS)
def test_malicious_pickle_refused_naming_the_global_and_never_run(tmp_path, form):
    target = tmp_path / "pwned"
    path = write_malicious(tmp_path / "evil.ckpt", target, form)
    with pytest.raises(UnsafeFileError) as error:
        safe_load(path)
    message = str(error.value)
    assert "system" in message and "evil.ckpt" in message and "refused as unsafe" in message
    assert not target.exists()


def test_the_scan_follows_names_taken_from_the_memo(tmp_path):
    walkable = unscannable_pickle(tmp_path / "pwned")[: -len(b"\xff.")] + b"."
    assert [name.rsplit(".", 1)[1] for name in forbidden_globals(walkable)] == ["system"]


def test_raw_pickle_with_exec_refused(tmp_path):
    target = tmp_path / "pwned2"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload(target)))
    with pytest.raises(UnsafeFileError, match="system"):
        load_state_dict(path)
    assert not target.exists()


def test_cli_reports_a_malicious_checkpoint_in_one_line(tmp_path, data_dir):
    target = tmp_path / "pwned3"
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    evil = folder / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload(target)}, evil)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdstudio.cli.main",
            "--data-dir",
            str(data_dir),
            "txt2img",
            "--ckpt",
            str(evil),
            "--prompt",
            "x",
            "--steps",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "system" in lines[0] and "evil.ckpt" in lines[0]
    assert not target.exists()
