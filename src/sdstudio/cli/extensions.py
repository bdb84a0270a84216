"""`sdstudio extensions`: list, install, enable, disable and remove extensions (A1111's Extensions tab)."""

from __future__ import annotations

import argparse
import json
import sys

from sdstudio.cli.common import open_app_from_args


def register(subparsers) -> None:
    """Add the `extensions` subcommand with list / install / enable / disable / remove."""
    parser = subparsers.add_parser(
        "extensions",
        help="list, install, enable, disable and remove extensions",
        description="Manage the extensions in DATA_DIR/extensions (A1111's layout: NAME/scripts/*.py).",
    )
    actions = parser.add_subparsers(dest="extensions_action", metavar="ACTION")
    listing = actions.add_parser("list", help="list installed extensions and their scripts and problems")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=run_list)
    install = actions.add_parser(
        "install",
        help="install from a local folder or a git repository",
        description="Copy a local folder, or clone a git repository this machine can reach (a path or file:// URL "
        "works offline), into DATA_DIR/extensions.",
    )
    install.add_argument("source", help="a folder, a git repository path or a git URL")
    install.add_argument("--name", default=None, help="the folder name to install under (default: the source's)")
    install.set_defaults(handler=run_install)
    for action, verb in (("enable", "enable"), ("disable", "disable"), ("remove", "delete")):
        sub = actions.add_parser(action, help=f"{verb} an installed extension")
        sub.add_argument("name", help="the extension's folder name")
        sub.set_defaults(handler=run_change, change=action)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _describe(status) -> dict:
    return {
        "name": status.name,
        "enabled": status.enabled,
        "scripts": status.scripts,
        "errors": status.errors,
        "remote": status.remote,
        "version": status.version,
        "path": str(status.path),
    }


def run_list(args: argparse.Namespace) -> int:
    """Print the installed extensions (name, state, scripts, problems)."""
    app = open_app_from_args(args)
    statuses = app.extensions.list()
    if args.json:
        print(json.dumps([_describe(status) for status in statuses], indent=2))
        return 0
    if not statuses:
        print(f"no extensions installed in {app.scripts.extensions_dir}")
    for status in statuses:
        state = "enabled" if status.enabled else "disabled"
        scripts = ", ".join(status.scripts) or "no scripts loaded"
        version = f" {status.version}" if status.version else ""
        print(f"{status.name}{version}  [{state}]  {scripts}")
        for error in status.errors:
            print(f"    problem: {error}")
    return 0


def run_install(args: argparse.Namespace) -> int:
    """Install an extension and say what it brought."""
    app = open_app_from_args(args)
    status = app.extensions.install(args.source, name=args.name)
    print(f"installed {status.name} in {status.path}: {', '.join(status.scripts) or 'no scripts'}")
    for error in status.errors:
        print(f"warning: {status.name}: {error}", file=sys.stderr)
    return 0


def run_change(args: argparse.Namespace) -> int:
    """Enable, disable or remove an extension (saved in config.json: it lasts across restarts)."""
    app = open_app_from_args(args)
    if args.change == "remove":
        app.extensions.remove(args.name)
        print(f"removed {args.name}")
        return 0
    status = app.extensions.enable(args.name) if args.change == "enable" else app.extensions.disable(args.name)
    print(f"{status.name}: {'enabled' if status.enabled else 'disabled'}")
    return 0
