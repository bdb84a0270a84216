"""`sdstudio img2img`: image-to-image generation and inpainting."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `img2img` subcommand."""
    parser = subparsers.add_parser("img2img", help="image-to-image generation and inpainting", description="Image-to-image generation and inpainting.")
    parser.set_defaults(handler=not_built_yet("image-to-image generation and inpainting"))
