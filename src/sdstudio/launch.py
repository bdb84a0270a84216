"""Starting sdstudio's servers: the A1111 API, the web UI, or both, over one App and one job queue.

The CLI's `serve` and `webui` parse flags and call `launch`; tests call `build_server` to get
the same FastAPI app without uvicorn. The API and the UI are one FastAPI app over one job
queue (A1111's `--api`), so a job from either waits in the same line.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from sdstudio.errors import InvalidRequest

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sdstudio.app import App
    from sdstudio.engine.job_queue import JobQueue


@dataclass(frozen=True)
class LaunchOptions:
    """What to serve and how (the flags of `sdstudio serve` / `sdstudio webui`)."""

    listen: bool = False
    port: int = 7860
    api: bool = True
    ui: bool = False
    api_auth: str | None = None
    ui_auth: str | None = None
    api_server_stop: bool = False
    """Serve /sdapi/v1/server-stop, -restart and -kill (A1111's --api-server-stop)."""

    @property
    def host(self) -> str:
        """The address to bind: all interfaces only with --listen."""
        return "0.0.0.0" if self.listen else "127.0.0.1"


def check_port_free(host: str, port: int) -> None:
    """Fail in a second, with the fix, rather than after building everything (uvicorn's way)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidRequest(
                "port",
                f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses it or pick another port with --port",
            ) from None


def check_credentials(options: LaunchOptions) -> None:
    """Refuse a malformed USER:PASS spec before anything is built."""
    from sdstudio.server.auth import parse_credentials

    parse_credentials(options.api_auth)
    parse_credentials(options.ui_auth)


def build_server(app: App, options: LaunchOptions) -> tuple[FastAPI, JobQueue]:
    """The FastAPI app (API and/or UI mounted) and its job queue, not yet started."""
    from sdstudio.engine.job_queue import JobQueue

    queue = JobQueue()
    if options.api:
        from sdstudio.server.app import ServerOptions, create_api

        server_options = ServerOptions(
            listen=options.listen,
            port=options.port,
            api_auth=options.api_auth,
            api=True,
            api_server_stop=options.api_server_stop,
            flags={"gradio_auth": "***" if options.ui_auth else None} if options.ui else {},
        )
        fastapi_app = create_api(app, queue, server_options)
    else:
        from fastapi import FastAPI

        from sdstudio import __version__

        fastapi_app = FastAPI(title="sdstudio", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    if options.ui:
        from sdstudio.server.auth import parse_credentials
        from sdstudio.ui.backend import UiBackend
        from sdstudio.ui.webui import build_ui, mount_ui, offline_environment

        offline_environment()
        # Gradio's copies of shown images (every live preview is one) stay inside the data dir.
        os.environ.setdefault("GRADIO_TEMP_DIR", str(app.paths.cache_dir / "gradio"))
        blocks = build_ui(UiBackend.from_app(app), queue)
        mount_ui(fastapi_app, blocks, auth=list(parse_credentials(options.ui_auth).items()) or None)
    return fastapi_app, queue


def launch(app: App, options: LaunchOptions, started: float | None = None) -> int:
    """Serve until interrupted; returns the process exit code."""
    import uvicorn

    from sdstudio.config import remove_stale_temp_files

    started = time.perf_counter() if started is None else started
    remove_stale_temp_files([app.paths.outputs])  # images a crash cut short (open_app swept the rest)
    fastapi_app, queue = build_server(app, options)
    server = uvicorn.Server(uvicorn.Config(fastapi_app, host=options.host, port=options.port, log_level="warning"))
    announce = threading.Thread(target=_announce_when_ready, args=(server, options, started, app), daemon=True)
    server_exit = fastapi_app.state.server_exit if options.api else None
    if server_exit is not None:
        server_exit.attach(server)
    queue.start()
    announce.start()
    try:
        server.run()
    finally:
        queue.stop()
    if server_exit is not None and server_exit.restart:
        restart_process()
    return 0


def restart_process() -> NoReturn:
    """Run this process's command line again in its place (same pid), for /sdapi/v1/server-restart.

    The server has shut down and the port is free; exec frees everything else (models, GPU memory).
    """
    print("sdstudio: restarting", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(sys.executable, sys.orig_argv)


def _announce_when_ready(server, options: LaunchOptions, started: float, app: App) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    base = f"http://{options.host}:{options.port}"
    if options.ui:
        api_text = ", API at /sdapi/v1 (docs: /docs)" if options.api else ""
        what = f"web UI ready: {base}/{api_text}"
    else:
        what = f"API ready: {base}/sdapi/v1 (docs: /docs)"
    cpu = os.times()
    # CPU seconds say what the start costs on an idle machine when other work shares the cores.
    print(
        f"sdstudio {what}; started in {time.perf_counter() - started:.1f} s "
        f"(process CPU {cpu.user + cpu.system:.1f} s); data dir {app.paths.root}",
        file=sys.stderr,
        flush=True,
    )
