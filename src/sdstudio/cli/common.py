"""Helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from sdstudio.errors import InvalidRequest, NotImplementedYet


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


class _NotesGiven(argparse.Action):
    """Mixin: after the real action stores the value, note that the command line gave this option."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)  # the real action, next in the MRO
        if option_string is not None:  # positionals are called even when absent
            namespace.given_options = frozenset(getattr(namespace, "given_options", ())) | {self.dest}


class _StoreGiven(_NotesGiven, argparse._StoreAction):
    """`--option VALUE`, noted."""


class _StoreTrueGiven(_NotesGiven, argparse._StoreTrueAction):
    """`--switch`, noted."""


class _AppendGiven(_NotesGiven, argparse._AppendAction):
    """`--option VALUE` repeatable, noted."""


def record_given_options(parser: argparse.ArgumentParser) -> None:
    """Options added to `parser` from now on note their dest in `args.given_options` when the command line gives them.

    A value typed equal to its default still counts as given, which comparing with the
    defaults could not tell (an --infotext fills only the fields the command line left out).
    """
    for action in (None, "store"):
        parser.register("action", action, _StoreGiven)
    parser.register("action", "store_true", _StoreTrueGiven)
    parser.register("action", "append", _AppendGiven)


def given_options(args: argparse.Namespace) -> frozenset[str]:
    """The dests of the options the command line gave (see `record_given_options`)."""
    return frozenset(getattr(args, "given_options", ()))


def image_decode_limit(args: argparse.Namespace) -> float:
    """The data dir's img_max_decode_mp (read before the app opens: files are decoded while requests are checked)."""
    from sdstudio.config import DataPaths, load_settings, resolve_data_dir

    paths = DataPaths(resolve_data_dir(getattr(args, "data_dir", None)))
    return load_settings(paths.config_file).settings.img_max_decode_mp


def read_image_infotext(path: Path, field: str, max_megapixels: float) -> str | None:
    """The generation parameters stored in an image file (as `pnginfo` prints them), or None when it has none."""
    from sdstudio.engine.saving import read_infotext
    from sdstudio.postprocess.image_files import decode_client_image

    return read_infotext(decode_client_image(path, field, max_megapixels))


def script_fields(args: argparse.Namespace) -> tuple[str | None, list, dict[str, dict[str, list]]]:
    """The scripts the command line names (--script, --script-args, --alwayson-script) as the API takes them."""

    def json_list(text: str, field: str) -> list:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(field, f"not valid JSON ({exc.msg}): {text!r}") from None
        if isinstance(value, dict) and "args" in value:
            value = value["args"]
        if not isinstance(value, list):
            raise InvalidRequest(field, f"must be a JSON list of arguments, got {text!r}")
        return value

    script_args = json_list(args.script_args, "--script-args") if args.script_args else []
    alwayson: dict[str, dict[str, list]] = {}
    for item in args.alwayson_scripts:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest("--alwayson-script", f"expected NAME=JSON, got {item!r}")
        alwayson[name.strip()] = {"args": json_list(value, "--alwayson-script")}
    return args.script, script_args, alwayson
