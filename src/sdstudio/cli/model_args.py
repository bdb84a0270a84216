"""`--ckpt PATH` / `--model NAME` for the generation commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdstudio.errors import InvalidRequest


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --ckpt (CompVis) and --model (name, title or hash)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ckpt", metavar="PATH", default=None, help="checkpoint file to use")
    group.add_argument("--model", metavar="NAME", default=None,
                       help="checkpoint by name, title or hash (see `sdstudio models list`)")


def checkpoint_choice(args: argparse.Namespace) -> str | None:
    """The checkpoint asked for on the command line (a path or a registry name), or None."""
    if getattr(args, "ckpt", None):
        path = Path(args.ckpt).expanduser()
        if not path.is_file():
            raise InvalidRequest("ckpt", f"no such file: {path}")
        return str(path.resolve())
    return getattr(args, "model", None) or None

add_model_args = add_model_arguments
