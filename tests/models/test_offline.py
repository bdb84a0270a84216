"""Everything works with no network: no hub variables set, sockets refused, and in a network namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Loaded by the child interpreter before anything else: every outgoing connection fails and is recorded.
SOCKET_GUARD = textwrap.dedent("""
    import os, socket

    def _refuse(self, address, *args, **kwargs):
        with open(os.environ["SDSTUDIO_TEST_CONNECT_LOG"], "a") as log:
            log.write(repr(address) + "\\n")
        raise OSError(101, "Network is unreachable (test guard)")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
""")


def offline_env(tmp_path: Path, data_dir: Path) -> dict[str, str]:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "DIFFUSERS_"))}
    env |= {
        "PYTHONPATH": str(guard),
        "SDSTUDIO_DATA_DIR": str(data_dir),
        "SDSTUDIO_TEST_CONNECT_LOG": str(tmp_path / "connects.log"),
        "HF_HOME": str(tmp_path / "empty-hf-home"),
    }  # no cached hub files to fall back on either
    return env


def generate_command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sdstudio.cli.main",
        "txt2img",
        "--prompt",
        "a red circle on a blue background",
        "--steps",
        "4",
        "--seed",
        "1",
        "--outdir",
        str(out),
        *extra,
    ]


def test_load_and_generate_without_network_and_without_hub_variables(tmp_path, data_dir_with_model):
    env = offline_env(tmp_path, data_dir_with_model)
    checkpoint = data_dir_with_model / "models" / "Stable-diffusion" / "random-tiny.safetensors"
    for args in ((), ("--ckpt", str(checkpoint), "--width", "32", "--height", "32")):
        out = tmp_path / ("out" + str(len(args)))
        result = subprocess.run(generate_command(out, *args), env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert list(out.rglob("*.png")), result.stdout
    log = tmp_path / "connects.log"
    assert not log.exists(), f"tried to connect: {log.read_text()}"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_generate_inside_a_network_namespace(tmp_path, data_dir):
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow user network namespaces")
    env = offline_env(tmp_path, data_dir)
    env.pop("PYTHONPATH")  # no guard: the namespace has no network at all, only loopback down
    result = subprocess.run(
        ["unshare", "-rn", *generate_command(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "out").rglob("*.png"))
