"""`sdstudio webui`: the web UI."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `webui` subcommand."""
    parser = subparsers.add_parser("webui", help="the web UI", description="The web UI.")
    parser.set_defaults(handler=not_built_yet("the web UI"))
