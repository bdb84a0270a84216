"""Starting sdstudio's servers: the A1111 API, the web UI, or both, over one App and one job queue.

The CLI's `serve` and `webui` parse flags and call `launch`; tests call `build_server` to get
the same FastAPI app without uvicorn. The API and the UI are one FastAPI app over one job
queue (A1111's `--api`), so a job from either waits in the same line.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import uvicorn

from sdstudio.errors import InvalidRequest

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sdstudio.app import App
    from sdstudio.engine.job_queue import JobQueue
    from sdstudio.server.cluster import ClusterWorkers
    from sdstudio.server.deps import ServerOptions


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
    insecure: bool = False
    """Serve --listen without credentials (refused otherwise)."""
    allowed_hosts: tuple[str, ...] = ()
    cors_allow_origins: tuple[str, ...] = ()
    cors_allow_origins_regex: str | None = None
    cluster: str | None = None
    """Run generation on a Ray cluster at this address ("": Ray's default); None: on this process's device."""
    replicas: int | None = None
    """With `cluster`: this many generation workers (None: autoscaled between the cluster_*_replicas settings)."""

    @property
    def host(self) -> str:
        """The address to bind: all interfaces only with --listen."""
        return "0.0.0.0" if self.listen else "127.0.0.1"


def check_port_free(host: str, port: int) -> None:
    """Fail in a second, with the fix, rather than after building everything (uvicorn's way)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidRequest(
                "port",
                f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses it or pick another port with --port",
            ) from None


def check_access(options: LaunchOptions) -> None:
    """Refuse, before anything is built, a malformed USER:PASS spec or CORS regex, and --listen without a login."""
    from sdstudio.server.auth import parse_credentials

    parse_credentials(options.api_auth)
    parse_credentials(options.ui_auth)
    if options.cors_allow_origins_regex is not None:
        try:
            re.compile(options.cors_allow_origins_regex)
        except re.error as exc:
            raise InvalidRequest("cors-allow-origins-regex", f"not a regular expression: {exc}") from None
    if options.listen and not (options.api_auth or options.ui_auth):
        print(
            "sdstudio: warning: --listen without --api-auth or --auth lets anyone who can reach this machine "
            "run jobs, change settings and read every output",
            file=sys.stderr,
            flush=True,
        )
        if not options.insecure:
            raise InvalidRequest(
                "listen",
                "refusing to serve the network without a login: add --api-auth USER:PASS (or --auth), "
                "or --insecure to serve it anyway",
            )


def server_options(options: LaunchOptions) -> ServerOptions:
    """What the server routes are told about how they were started."""
    from sdstudio.server.deps import ServerOptions

    return ServerOptions(
        listen=options.listen,
        port=options.port,
        api_auth=options.api_auth,
        ui_auth=options.ui_auth,
        api=options.api,
        api_server_stop=options.api_server_stop,
        allowed_hosts=options.allowed_hosts,
        cors_allow_origins=options.cors_allow_origins,
        cors_allow_origins_regex=options.cors_allow_origins_regex,
        flags={
            "gradio_auth": "***" if options.ui_auth else None,
            "cors_allow_origins": ",".join(options.cors_allow_origins) or None,
            "cors_allow_origins_regex": options.cors_allow_origins_regex,
        },
    )


def build_server(app: App, options: LaunchOptions, workers: int = 1) -> tuple[FastAPI, JobQueue]:
    """The FastAPI app (API and/or UI mounted) and its job queue (`workers` jobs at once), not yet started."""
    from sdstudio.engine.job_queue import JobQueue

    queue = JobQueue(workers)
    served = server_options(options)
    if options.api:
        from sdstudio.server.app import create_api

        fastapi_app = create_api(app, queue, served)
    else:
        from fastapi import FastAPI

        from sdstudio import __version__
        from sdstudio.server.access import install_access_control

        fastapi_app = FastAPI(title="sdstudio", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
        fastapi_app.state.login_page = install_access_control(fastapi_app, served)
        from sdstudio.server.routes.tasks import TASK_KINDS
        from sdstudio.server.tasks import TaskRunner

        # The page's Queue tab shows (and a start resumes) the tasks an API server stored in this data dir.
        fastapi_app.state.tasks = TaskRunner.open(app, queue, TASK_KINDS)
    fastapi_app.state.end_streams = None
    if options.ui:
        from sdstudio.server.auth import credentials_match, parse_credentials
        from sdstudio.ui.backend import UiBackend
        from sdstudio.ui.webui import (
            LOGIN_PAGE_PATHS,
            LOGIN_PAGE_PREFIXES,
            build_ui,
            end_session_streams,
            login_session_check,
            mount_ui,
            offline_environment,
        )

        offline_environment()
        # Gradio's copies of shown images (every live preview is one) stay inside the data dir.
        os.environ.setdefault("GRADIO_TEMP_DIR", str(app.paths.cache_dir / "gradio"))
        # As A1111: a page anyone on the network may reach does not install or change extensions (code).
        backend = UiBackend.from_app(app, extension_access=not options.listen, tasks=fastapi_app.state.tasks)
        assets = backend.page_assets()  # the enabled extensions' javascript/ and style.css
        blocks = build_ui(backend, queue, assets=assets)
        ui_users = list(parse_credentials(options.ui_auth).items())
        login = (lambda user, password: credentials_match(ui_users, user, password)) if ui_users else None
        gradio_app = mount_ui(fastapi_app, blocks, auth=login, assets=assets)
        if ui_users:
            fastapi_app.state.login_page.attach(login_session_check(gradio_app), LOGIN_PAGE_PATHS, LOGIN_PAGE_PREFIXES)
        fastapi_app.state.end_streams = lambda: end_session_streams(gradio_app)
    return fastapi_app, queue


def launch(app: App, options: LaunchOptions, started: float | None = None) -> int:
    """Serve until interrupted; returns the process exit code."""
    from sdstudio.config import remove_stale_temp_files

    started = time.perf_counter() if started is None else started
    remove_stale_temp_files([app.paths.outputs])  # images a crash cut short (open_app swept the rest)
    cluster = None
    if options.cluster is not None:
        app, cluster = join_cluster(app, options)
    fastapi_app, queue = build_server(app, options, cluster.replicas if cluster else 1)
    config = uvicorn.Config(fastapi_app, host=options.host, port=options.port, log_level="warning")
    server = StreamEndingServer(config, fastapi_app.state.end_streams)
    announce = threading.Thread(target=_announce_when_ready, args=(server, options, started, app), daemon=True)
    server_exit = fastapi_app.state.server_exit if options.api else None
    if server_exit is not None:
        server_exit.attach(server)
    # Before any request: what a previous process left runs first, in its order.
    resumed = fastapi_app.state.tasks.resume()
    if resumed:
        print(f"sdstudio: {len(resumed)} stored task(s) queued again", file=sys.stderr, flush=True)
    queue.start()
    announce.start()
    try:
        server.run()
    finally:
        queue.stop()
        if cluster is not None:
            cluster.close()
    if server_exit is not None and server_exit.restart:
        restart_process()
    return 0


def join_cluster(app: App, options: LaunchOptions) -> tuple[App, ClusterWorkers]:
    """Deploy the generation workers on the Ray cluster; the App whose engine sends them its jobs."""
    try:
        from sdstudio.server.cluster import cluster_app, start_cluster
    except ImportError as exc:
        raise InvalidRequest(
            "cluster", f"--cluster needs Ray Serve ({exc}); install it with: pip install 'sdstudio[cluster]'"
        ) from None
    workers = start_cluster(app, options.cluster or None, options.replicas)
    print(f"sdstudio: cluster: {workers.replicas} generation worker(s) at most", file=sys.stderr, flush=True)
    return cluster_app(app, workers), workers


class StreamEndingServer(uvicorn.Server):
    """uvicorn's server, which first ends the streams that never end by themselves when it shuts down.

    A graceful shutdown waits for every open request; a web UI page's heartbeat stream stays open as long
    as the page, so without this one open tab would keep Ctrl-C and SIGTERM from stopping the server.
    """

    def __init__(self, config: uvicorn.Config, end_streams: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.end_streams = end_streams

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.end_streams is not None:
            self.end_streams()
        await super().shutdown(sockets)


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
