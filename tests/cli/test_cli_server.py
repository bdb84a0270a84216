"""`sdstudio txt2img/img2img --server URL`: the job runs on a running server, the images are saved here.

The server is a real one on 127.0.0.1 over the bundled model; the CLI runs in-process (`main`) and,
for the import check, as its own process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.app import open_app
from sdstudio.cli.main import main
from tests.server.conftest import free_port, start_server

JOB = ["--prompt", "a red circle on a blue background", "--seed", "5", "--steps", "3", "--sampler", "Euler a"]


@pytest.fixture
def server(tmp_path):
    running = start_server(open_app(tmp_path / "server-data"))
    yield running
    running.stop()


def saved(capsys) -> list[Path]:
    return [Path(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_job_sent_to_the_server_saves_the_same_image_and_infotext_as_a_local_run(tmp_path, capsys, server):
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "txt2img", *JOB, "--outdir", str(tmp_path / "local"), "--no-progress"]) == 0
    [local] = saved(capsys)
    sent = ["--server", server.url, "--outdir", str(tmp_path / "remote"), "--no-progress"]
    assert main(["--data-dir", str(data), "txt2img", *JOB, *sent]) == 0
    [remote] = saved(capsys)
    assert remote.relative_to(tmp_path / "remote") == local.relative_to(tmp_path / "local")  # same name, same folders
    assert np.array_equal(pixels(local), pixels(remote))
    assert Image.open(remote).info["parameters"] == Image.open(local).info["parameters"]
    server_outputs = server.app.paths.outputs
    assert not server_outputs.exists() or not any(p.is_file() for p in server_outputs.rglob("*.png"))


def test_a_batch_with_a_grid_is_saved_as_samples_then_grid_with_each_seed(tmp_path, capsys, server):
    argv = [*JOB, "--n_samples", "2", "--server", server.url, "--outdir", str(tmp_path / "out"), "--no-progress"]
    assert main(["--data-dir", str(tmp_path / "data"), "txt2img", *argv]) == 0
    first, second, grid = saved(capsys)
    assert "-5-" in first.name and "-6-" in second.name
    assert grid.is_relative_to(tmp_path / "out" / "grids") and grid.name.startswith("grid-")
    assert "Seed: 6" in Image.open(second).info["parameters"]


def test_img2img_sends_its_init_image(tmp_path, capsys, server):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    argv = [*JOB, "--init-image", str(init), "--denoising-strength", "0.5", "--server", server.url, "--no-progress"]
    assert main(["--data-dir", str(tmp_path / "data"), "img2img", *argv]) == 0
    [image] = saved(capsys)
    assert "img2img" in str(image) and "Denoising strength: 0.5" in Image.open(image).info["parameters"]


def test_a_refused_job_names_the_field_and_saves_nothing(tmp_path, capsys, server):
    data = tmp_path / "data"
    code = main(["--data-dir", str(data), "txt2img", *JOB, "--sampler", "Bogus", "--server", server.url])
    err = capsys.readouterr().err
    assert code == 2 and "sampler_name" in err and "Traceback" not in err
    assert not (data / "outputs").exists()


def test_no_server_at_the_address_is_one_clear_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    code = main(["--data-dir", str(tmp_path / "data"), "txt2img", *JOB, "--server", url])
    err = capsys.readouterr().err
    assert code == 2 and f"no server answers at {url}" in err and "sdstudio serve" in err
    assert err.count("\n") == 1


def test_ckpt_names_a_local_file_and_is_refused_with_server(tmp_path, capsys, server):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"")
    code = main(["--data-dir", str(tmp_path / "data"), "txt2img", *JOB, "--ckpt", str(ckpt), "--server", server.url])
    assert code == 2 and "--model NAME" in capsys.readouterr().err


def test_the_server_path_never_imports_torch(tmp_path, server):
    """What makes a repeated call cheap: no torch, diffusers or transformers in the CLI process."""
    script = (
        "import sys\n"
        "from sdstudio.cli.main import main\n"
        f"code = main(['--data-dir', {str(tmp_path / 'data')!r}, 'txt2img', *{JOB!r}, '--server', {server.url!r},"
        " '--no-progress'])\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'gradio', 'fastapi') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "heavy: []" in run.stdout
