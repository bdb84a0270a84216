"""`sdstudio watermark`: invisible watermark decoding."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `watermark` subcommand."""
    parser = subparsers.add_parser("watermark", help="invisible watermark decoding", description="Invisible watermark decoding.")
    parser.set_defaults(handler=not_built_yet("invisible watermark decoding"))
