"""`sdstudio webui`: the Gradio web UI, served with the A1111 API from one process.

The UI and (with --api) the API are one FastAPI app over one job queue, like A1111's
`--api`. Nothing is loaded before the first generation: the model loads on first use,
so the page is up in seconds.
"""

from __future__ import annotations

import argparse
import time


def register(subparsers) -> None:
    """Add the `webui` subcommand."""
    from sdstudio.cli.serve import add_server_arguments

    parser = subparsers.add_parser(
        "webui",
        help="the web UI (and, with --api, the A1111 API)",
        description="Serve the web UI on http://127.0.0.1:PORT (all interfaces with --listen).",
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--api", action="store_true", help="also serve the A1111-compatible API (/sdapi/v1, docs at /docs)"
    )
    parser.add_argument(
        "--auth",
        "--gradio-auth",
        dest="auth",
        metavar="USER:PASS[,USER2:PASS2]",
        default=None,
        help="require a login for the web UI (and for the API unless --api-auth is given); "
        "--gradio-auth is A1111's name for it",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve the web UI (and the API) until interrupted."""
    started = time.perf_counter()
    from sdstudio.cli.common import open_app_from_args
    from sdstudio.cli.serve import launch_options
    from sdstudio.launch import check_access, check_port_free, launch

    options = launch_options(args, api=args.api, ui=True, api_auth=args.api_auth or args.auth, ui_auth=args.auth)
    check_access(options)  # fail early, with a clear line, on a malformed spec or an open --listen
    check_port_free(options.host, options.port)
    return launch(open_app_from_args(args), options, started=started)
