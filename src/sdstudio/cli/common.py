"""Helpers shared by subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sdstudio.errors import NotImplementedYet


def not_built_yet(feature: str) -> Callable[[argparse.Namespace], int]:
    """A handler for a subcommand whose feature has not been built yet."""

    def handler(args: argparse.Namespace) -> int:
        raise NotImplementedYet(f"{feature} is not built yet (see the feature table in README.md)")

    return handler


def open_app_from_args(args: argparse.Namespace):
    """Open the app on the data dir named by --data-dir, printing any settings notice."""
    import sys

    from sdstudio.app import open_app
    from sdstudio.cli.model_args import load_options

    app = open_app(args.data_dir, run_options=load_options(args))
    for notice in app.notices:
        print(f"warning: {notice}", file=sys.stderr)
    return app
