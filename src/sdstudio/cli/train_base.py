"""`sdstudio train-base`: training the bundled tiny model from scratch."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `train-base` subcommand."""
    parser = subparsers.add_parser("train-base", help="training the bundled tiny model from scratch", description="Training the bundled tiny model from scratch.")
    parser.set_defaults(handler=not_built_yet("training the bundled tiny model from scratch"))
