"""`sdstudio extras`: upscaling and face restoration (Extras)."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `extras` subcommand."""
    parser = subparsers.add_parser("extras", help="upscaling and face restoration (Extras)", description="Upscaling and face restoration (Extras).")
    parser.set_defaults(handler=not_built_yet("upscaling and face restoration (Extras)"))
