"""`sdstudio train-lora`: LoRA training."""

from __future__ import annotations

from sdstudio.cli.common import not_built_yet


def register(subparsers) -> None:
    """Add the `train-lora` subcommand."""
    parser = subparsers.add_parser("train-lora", help="LoRA training", description="LoRA training.")
    parser.set_defaults(handler=not_built_yet("LoRA training"))
