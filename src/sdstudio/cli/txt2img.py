"""`sdstudio txt2img`: text-to-image generation."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `txt2img` subcommand."""
    parser = subparsers.add_parser("txt2img", help="text-to-image generation", description="Text-to-image generation.")
    parser.set_defaults(handler=not_built_yet("text-to-image generation"))
