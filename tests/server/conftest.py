"""A real sdstudio API server on 127.0.0.1 (uvicorn in a thread) over a temp data dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from sdstudio.app import App, open_app
from sdstudio.engine.job_queue import JobQueue
from sdstudio.server.app import ServerOptions, create_api


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    app: App
    queue: JobQueue
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.queue.stop()


def start_server(
    app: App, options: ServerOptions | None = None, resume_tasks: bool = False, queue: JobQueue | None = None
) -> RunningServer:
    """Serve `app` over real HTTP on a free loopback port (its jobs on `queue`, a fresh one by default).

    `resume_tasks`: first take up the stored tasks a previous server left, as `sdstudio serve` does at start.
    """
    queue = queue or JobQueue()
    port = free_port()
    api = create_api(app, queue, options or ServerOptions(port=port))
    if resume_tasks:
        api.state.tasks.resume()
    config = uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    api.state.server_exit.attach(server)  # as `launch` does: /server-stop ends this server
    thread = threading.Thread(target=server.run, daemon=True)
    queue.start()
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    return RunningServer(app, queue, f"http://127.0.0.1:{port}", server, thread)


def wait_until_sampling(client: httpx.Client, step: int = 2, timeout: float = 60) -> dict:
    """Poll /progress until the running job reaches sampling step `step`; returns that progress state."""
    deadline, state = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        state = client.get("/sdapi/v1/progress").json()["state"]
        if state["sampling_step"] >= step:
            return state
        time.sleep(0.05)
    raise AssertionError(f"no job reached sampling step {step} within {timeout} s: {state}")


@pytest.fixture
def api_server(data_dir):
    running = start_server(open_app(data_dir))
    yield running
    running.stop()


REPO = Path(__file__).resolve().parents[2]


class ServeProcess:
    """`sdstudio serve [FLAGS]` as a subprocess on a free port, its output in a log file."""

    def __init__(self, data_dir: Path, log: Path, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "sdstudio.cli.main", "--data-dir", str(data_dir)]
        command += ["serve", "--port", str(self.port), *flags]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, times: int = 1, timeout: float = 180) -> None:
        """Until the server has announced itself `times` times and answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited with {self.process.returncode}:\n{self.log()}"
            if self.log().count("API ready") >= times and self.port_open():
                return
            time.sleep(0.1)
        raise AssertionError(f"not ready {times} time(s) within {timeout} s:\n{self.log()}")

    def port_open(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
