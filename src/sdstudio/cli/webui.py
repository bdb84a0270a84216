"""`sdstudio webui`: the Gradio web UI, served with the A1111 API from one process.

The UI and (with --api) the API are one FastAPI app over one job queue, like A1111's
`--api`. Nothing is loaded before the first generation: the model loads on first use,
so the page is up in seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time


def register(subparsers) -> None:
    """Add the `webui` subcommand."""
    from sdstudio.cli.serve import add_server_arguments

    parser = subparsers.add_parser(
        "webui", help="the web UI (and, with --api, the A1111 API)",
        description="Serve the web UI on http://127.0.0.1:PORT (all interfaces with --listen).")
    add_server_arguments(parser)
    parser.add_argument("--api", action="store_true", help="also serve the A1111-compatible API (/sdapi/v1, docs at /docs)")
    parser.add_argument("--auth", "--gradio-auth", dest="auth", metavar="USER:PASS[,USER2:PASS2]", default=None,
                        help="require a login for the web UI (and for the API unless --api-auth is given); "
                             "--gradio-auth is A1111's name for it")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the app, mount the UI, and serve until interrupted."""
    started = time.perf_counter()
    from sdstudio.ui.webui import offline_environment

    offline_environment()  # before Gradio is imported anywhere
    from sdstudio.server.auth import parse_credentials

    parse_credentials(args.auth)  # fail early, with a clear line, on a malformed spec
    api_auth = args.api_auth or args.auth
    parse_credentials(api_auth)
    check_port_free("0.0.0.0" if args.listen else "127.0.0.1", args.port)
    from sdstudio.cli.common import open_app_from_args

    app = open_app_from_args(args)
    return serve(app, listen=args.listen, port=args.port, api=args.api, ui_auth=args.auth, api_auth=api_auth,
                 started=started)


def serve(app, *, listen: bool = False, port: int = 7860, api: bool = False, ui_auth: str | None = None,
          api_auth: str | None = None, started: float | None = None) -> int:
    """Serve the web UI (and the API) over an opened App until interrupted."""
    import uvicorn

    from sdstudio.server.auth import parse_credentials
    from sdstudio.engine.job_queue import JobQueue
    from sdstudio.ui.backend import UiBackend
    from sdstudio.ui.webui import build_ui, mount_ui, offline_environment

    offline_environment()
    # Gradio's copies of shown images (every live preview is one) stay inside the data dir.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(app.paths.cache_dir / "gradio"))
    started = time.perf_counter() if started is None else started
    queue = JobQueue()
    fastapi_app = _fastapi_app(app, queue, listen, port, api, ui_auth, api_auth)
    blocks = build_ui(UiBackend.from_app(app), queue)
    mount_ui(fastapi_app, blocks, auth=list(parse_credentials(ui_auth).items()) or None)
    host = "0.0.0.0" if listen else "127.0.0.1"
    server = uvicorn.Server(uvicorn.Config(fastapi_app, host=host, port=port, log_level="warning"))
    announce = threading.Thread(target=_announce_when_ready, args=(server, host, port, api, started, app), daemon=True)
    queue.start()
    announce.start()
    try:
        server.run()
    finally:
        queue.stop()
    return 0


def check_port_free(host: str, port: int) -> None:
    """Fail in a second, with the fix, rather than after building everything (uvicorn's way)."""
    import socket

    from sdstudio.errors import InvalidRequest

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidRequest("port", f"cannot listen on {host}:{port} ({exc.strerror}); "
                                         "stop what uses it or pick another port with --port") from None


def _fastapi_app(app, queue, listen: bool, port: int, api: bool, ui_auth: str | None, api_auth: str | None):
    """The A1111 API app when --api is given, else a bare FastAPI app for the UI alone."""
    if api:
        from sdstudio.server.app import ServerOptions, create_api

        options = ServerOptions(listen=listen, port=port, api_auth=api_auth, api=True,
                                flags={"gradio_auth": "***" if ui_auth else None})
        return create_api(app, queue, options)
    from fastapi import FastAPI

    from sdstudio import __version__

    return FastAPI(title="sdstudio", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)


def _announce_when_ready(server, host: str, port: int, api: bool, started: float, app) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    shown = "127.0.0.1" if host == "127.0.0.1" else host
    api_text = ", API at /sdapi/v1 (docs: /docs)" if api else ""
    cpu = os.times()
    # CPU seconds say what the start costs on an idle machine when other work shares the cores.
    print(f"sdstudio web UI ready in {time.perf_counter() - started:.1f} s (process CPU {cpu.user + cpu.system:.1f} s): "
          f"http://{shown}:{port}/{api_text}; data dir {app.paths.root}", file=sys.stderr, flush=True)
