"""The CLI skeleton: help everywhere, version, and unbuilt commands exit non-zero."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sdstudio.cli.main import SUBCOMMAND_MODULES, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdstudio.cli.main", *args], capture_output=True, text=True)


def test_help_lists_every_subcommand():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in SUBCOMMAND_MODULES:
        assert name.replace("_", "-") in result.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "sdstudio 0." in capsys.readouterr().out


@pytest.mark.parametrize("name", [n.replace("_", "-") for n in SUBCOMMAND_MODULES])
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: sdstudio " + name in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "said"),
    [(["--replicas", "2"], "goes with --cluster"), (["--cluster", "--replicas", "0"], "needs at least 1")],
)
def test_serve_refuses_replicas_it_cannot_use_before_starting_anything(flags, said, capsys):
    assert main(["serve", *flags]) == 2
    assert f"replicas: --replicas {said}" in capsys.readouterr().err
