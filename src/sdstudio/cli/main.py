"""`sdstudio` entry point: parses arguments and dispatches to a subcommand module.

Each subcommand module exposes `register(subparsers)` which adds its parser and sets
`handler` to a function `(args) -> int`. User errors (`SdStudioError`) become one line on
stderr and a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sdstudio import __version__
from sdstudio.errors import NotImplementedYet, SdStudioError

# Subcommand modules, in the order `--help` lists them.
SUBCOMMAND_MODULES = (
    "txt2img",
    "img2img",
    "extras",
    "models",
    "merge",
    "create_hypernetwork",
    "pnginfo",
    "serve",
    "webui",
    "train_lora",
    "train_embedding",
    "train_base",
    "watermark",
    "extensions",
)

EXIT_USER_ERROR = 2
EXIT_NOT_BUILT = 3


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="sdstudio",
        description="A local, offline-first Stable Diffusion studio.",
    )
    parser.add_argument("--version", action="version", version=f"sdstudio {__version__}")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="folder for models, outputs and config.json (default: $SDSTUDIO_DATA_DIR, else ~/.local/share/sdstudio)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"sdstudio.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.handler(args) or 0)
    except NotImplementedYet as exc:
        print(f"sdstudio {args.command}: {exc}", file=sys.stderr)
        return EXIT_NOT_BUILT
    except SdStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
