"""`sdstudio serve`: the A1111-compatible API server."""

from __future__ import annotations

import argparse


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `serve` and `webui`."""
    parser.add_argument(
        "--listen", action="store_true", help="listen on all network interfaces (default: 127.0.0.1 only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--api-auth", metavar="USER:PASS[,USER2:PASS2]", default=None, help="require HTTP basic auth for the API"
    )
    parser.add_argument(
        "--api-server-stop",
        action="store_true",
        help="let API clients stop or restart the server (POST /sdapi/v1/server-stop, -restart, -kill)",
    )
    from sdstudio.cli.model_args import add_load_arguments

    add_load_arguments(parser)


def register(subparsers) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="the A1111-compatible API server",
        description="Serve the A1111-compatible API (/sdapi/v1, docs at /docs).",
    )
    add_server_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve the API until interrupted."""
    from sdstudio.cli.common import open_app_from_args
    from sdstudio.launch import LaunchOptions, check_credentials, check_port_free, launch

    options = LaunchOptions(
        listen=args.listen,
        port=args.port,
        api=True,
        ui=False,
        api_auth=args.api_auth,
        api_server_stop=args.api_server_stop,
    )
    check_credentials(options)  # fail early, with a clear line, on a malformed spec
    check_port_free(options.host, options.port)
    return launch(open_app_from_args(args), options)
