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
        "--insecure",
        action="store_true",
        help="allow --listen without --api-auth/--auth: anyone on the network may then use the server",
    )
    parser.add_argument(
        "--allowed-hosts",
        metavar="NAME[,NAME2]",
        type=comma_list,
        default=(),
        help="host names the server answers to besides localhost, 127.0.0.1 and [::1] (against DNS rebinding); "
        "with --listen and without this flag any name is answered; * answers any",
    )
    parser.add_argument(
        "--cors-allow-origins",
        metavar="ORIGIN[,ORIGIN2]",
        type=comma_list,
        default=(),
        help="web page origins (https://host:port) allowed to call the server from a browser (CORS); none by default",
    )
    parser.add_argument(
        "--cors-allow-origins-regex",
        metavar="REGEX",
        default=None,
        help="a regular expression for further allowed origins (matched against the whole origin)",
    )
    parser.add_argument(
        "--api-server-stop",
        action="store_true",
        help="let API clients stop or restart the server (POST /sdapi/v1/server-stop, -restart, -kill)",
    )
    from sdstudio.cli.model_args import add_load_arguments

    add_load_arguments(parser)


def comma_list(value: str) -> tuple[str, ...]:
    """`a, b,` → ("a", "b")."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def launch_options(args: argparse.Namespace, **what):
    """The LaunchOptions for the server flags in `args`; `what` says what to serve and with which logins."""
    from sdstudio.launch import LaunchOptions

    return LaunchOptions(
        listen=args.listen,
        port=args.port,
        api_server_stop=args.api_server_stop,
        insecure=args.insecure,
        allowed_hosts=args.allowed_hosts,
        cors_allow_origins=args.cors_allow_origins,
        cors_allow_origins_regex=args.cors_allow_origins_regex,
        **what,
    )


def register(subparsers) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="the A1111-compatible API server",
        description="Serve the A1111-compatible API (/sdapi/v1, docs at /docs).",
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--cluster",
        metavar="RAY_ADDRESS",
        nargs="?",
        const="",
        default=None,
        help="run the generation on Ray Serve workers in the Ray cluster at RAY_ADDRESS (host:port of `ray start "
        "--head`); without an address: RAY_ADDRESS, else a cluster started on this machine, else a new local one. "
        "Needs the cluster extra (pip install 'sdstudio[cluster]'); see the README, 'Running on several machines'",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        metavar="N",
        help="with --cluster: run N generation workers (default: autoscaled between the settings "
        "cluster_min_replicas and cluster_max_replicas)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve the API until interrupted."""
    from sdstudio.cli.common import open_app_from_args
    from sdstudio.errors import InvalidRequest
    from sdstudio.launch import check_access, check_port_free, launch

    if args.replicas is not None and args.replicas < 1:
        raise InvalidRequest("replicas", "--replicas needs at least 1")
    if args.replicas is not None and args.cluster is None:
        raise InvalidRequest("replicas", "--replicas goes with --cluster")
    options = launch_options(
        args, api=True, ui=False, api_auth=args.api_auth, cluster=args.cluster, replicas=args.replicas
    )
    check_access(options)  # fail early, with a clear line, on a malformed spec or an open --listen
    check_port_free(options.host, options.port)
    return launch(open_app_from_args(args), options)
