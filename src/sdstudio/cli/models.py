"""`sdstudio models`: listing, inspecting and hashing models."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `models` subcommand."""
    parser = subparsers.add_parser("models", help="listing, inspecting and hashing models", description="Listing, inspecting and hashing models.")
    parser.set_defaults(handler=not_built_yet("listing, inspecting and hashing models"))
