"""Claim: sdstudio starts quickly: a whole CLI image costs a few torch imports, a call through --server < 1 s.

In one run, on this machine, each a fresh process (best and median of --repeat):

- `python -c "import torch"`: the yardstick every row is divided by;
- `sdstudio txt2img` with the bundled model (20 steps, 64x64) in a data dir that has seen it before
  (hashes cached), and the same in a fresh data dir (first use: folders made, the model hashed);
- the time from starting `sdstudio serve` / `sdstudio webui` to its first HTTP 200;
- `sdstudio txt2img --server URL` against the running `serve` (the model already loaded there).

Targets (issue: speed and memory): the whole CLI image <= 2.5x a bare torch import; the call
through --server < 1 s. Run it on a quiet machine: other work on the cores skews every row.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SDSTUDIO = [sys.executable, "-m", "sdstudio.cli.main"]
PROMPT = "a red circle on a blue background"
CLI_TARGET = 2.5
SERVER_CALL_TARGET_S = 1.0


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one process run to its end; a failure stops the benchmark with its output."""
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_first_200(command: list[str], url: str, env: dict[str, str]) -> tuple[float, subprocess.Popen]:
    """Seconds from starting a server process to its first 200 at `url`; the process is left running."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{' '.join(command)} exited ({process.returncode}): {process.stderr.read()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - started, process
        except httpx.TransportError:
            pass
        time.sleep(0.01)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        txt2img = ["txt2img", "--prompt", PROMPT, "--steps", "20", "--seed", "1", "--no-progress"]
        timed([*SDSTUDIO, "--data-dir", str(warm), *txt2img], env)  # first use of this data dir: not counted
        for attempt in range(options.repeat):  # interleaved, so a busy moment hits every row alike
            rows.setdefault("python -c 'import torch'", []).append(timed([sys.executable, "-c", "import torch"], env))
            rows.setdefault("sdstudio txt2img (bundled model, 20 steps)", []).append(
                timed([*SDSTUDIO, "--data-dir", str(warm), *txt2img], env)
            )
            fresh = Path(tmp) / f"fresh{attempt}"
            rows.setdefault("sdstudio txt2img, fresh data dir", []).append(
                timed([*SDSTUDIO, "--data-dir", str(fresh), *txt2img], env)
            )
        for name in ("serve", "webui"):
            for _ in range(options.repeat):
                port = free_port()
                command = [*SDSTUDIO, "--data-dir", str(warm), name, "--port", str(port)]
                if name == "webui":
                    command.append("--api")
                url = f"http://127.0.0.1:{port}/sdapi/v1/progress" if name == "serve" else f"http://127.0.0.1:{port}/"
                seconds, process = time_to_first_200(command, url, env)
                rows.setdefault(f"{name}: start to first HTTP 200", []).append(seconds)
                stop(process)
        port = free_port()
        _, server = time_to_first_200(
            [*SDSTUDIO, "--data-dir", str(warm), "serve", "--port", str(port)],
            f"http://127.0.0.1:{port}/sdapi/v1/progress",
            env,
        )
        try:
            remote = [*SDSTUDIO, "--data-dir", str(warm), *txt2img, "--server", f"http://127.0.0.1:{port}"]
            timed(remote, env)  # the server loads the model on its first job
            rows["sdstudio txt2img --server (model loaded there)"] = [timed(remote, env) for _ in range(options.repeat)]
        finally:
            stop(server)
    torch_import = min(rows["python -c 'import torch'"])
    print(f"{'what':52} {'best s':>8} {'median s':>9} {'x torch import':>15}")
    for name, values in rows.items():
        print(f"{name:52} {min(values):8.2f} {statistics.median(values):9.2f} {min(values) / torch_import:15.2f}")
    cli = min(rows["sdstudio txt2img (bundled model, 20 steps)"]) / torch_import
    call = min(rows["sdstudio txt2img --server (model loaded there)"])
    print(f"\nCLI image / torch import: {cli:.2f}x (target <= {CLI_TARGET}x)")
    print(f"CLI call through --server: {call:.2f} s (target < {SERVER_CALL_TARGET_S:.0f} s)")


if __name__ == "__main__":
    main()
