"""`sdstudio serve`: the A1111-compatible API server."""

from __future__ import annotations

import argparse
import sys


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `serve` and `webui`."""
    parser.add_argument("--listen", action="store_true",
                        help="listen on all network interfaces (default: 127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--api-auth", metavar="USER:PASS[,USER2:PASS2]", default=None,
                        help="require HTTP basic auth for the API")
    from sdstudio.cli.model_args import add_load_arguments

    add_load_arguments(parser)


def register(subparsers) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser("serve", help="the A1111-compatible API server",
                                   description="Serve the A1111-compatible API (/sdapi/v1, docs at /docs).")
    add_server_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Start uvicorn with the API app until interrupted."""
    import uvicorn

    from sdstudio.cli.common import open_app_from_args
    from sdstudio.server.app import ServerOptions, create_api
    from sdstudio.server.auth import parse_credentials
    from sdstudio.engine.job_queue import JobQueue

    parse_credentials(args.api_auth)  # fail early, with a clear line, on a malformed spec
    app = open_app_from_args(args)
    queue = JobQueue()
    options = ServerOptions(listen=args.listen, port=args.port, api_auth=args.api_auth)
    api = create_api(app, queue, options)
    host = "0.0.0.0" if args.listen else "127.0.0.1"
    queue.start()
    print(f"sdstudio API on http://{host}:{args.port}/sdapi/v1 (docs: /docs), data dir {app.paths.root}",
          file=sys.stderr)
    try:
        uvicorn.run(api, host=host, port=args.port, log_level="warning")
    finally:
        queue.stop()
    return 0
