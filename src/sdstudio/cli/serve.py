"""`sdstudio serve`: the A1111-compatible API server."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser("serve", help="the A1111-compatible API server", description="The A1111-compatible API server.")
    parser.set_defaults(handler=not_built_yet("the A1111-compatible API server"))
