"""`sdstudio pnginfo`: reading generation parameters from an image."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `pnginfo` subcommand."""
    parser = subparsers.add_parser("pnginfo", help="reading generation parameters from an image", description="Reading generation parameters from an image.")
    parser.set_defaults(handler=not_built_yet("reading generation parameters from an image"))
