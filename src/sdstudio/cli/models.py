"""`sdstudio models`: listing, inspecting and hashing models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdstudio.cli.common import open_app_from_args
from sdstudio.config import MODEL_KINDS


def register(subparsers) -> None:
    """Add the `models` subcommand with list / info / hash."""
    parser = subparsers.add_parser(
        "models",
        help="listing, inspecting and hashing models",
        description="List, inspect and hash the models in the data dir.",
    )
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    listing = actions.add_parser("list", help="list models", description="List models (all kinds unless --type).")
    listing.add_argument("--type", choices=sorted(MODEL_KINDS), default=None, help="only this kind")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=run_list)
    info = actions.add_parser("info", help="show one model", description="Show one model's hashes and metadata.")
    info.add_argument("name", help="name, title, short hash, sha256 or path")
    info.add_argument("--type", choices=sorted(MODEL_KINDS), default="checkpoint")
    info.set_defaults(handler=run_info)
    hashing = actions.add_parser(
        "hash",
        help="compute and cache every model's hashes",
        description="Compute (and cache) A1111's hashes of every model file.",
    )
    hashing.add_argument("--type", choices=sorted(MODEL_KINDS), default=None)
    hashing.set_defaults(handler=run_hash)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _entries(app, args, with_hashes: bool):
    for note in app.models.cleanup_stray_checkpoints():
        print(f"note: {note}", file=sys.stderr)
    kinds = [args.type] if args.type else list(MODEL_KINDS)
    return [entry for kind in kinds for entry in app.models.list(kind, with_hashes=with_hashes)]


def _unusable_upscalers(app) -> dict[Path, str]:
    """Upscaler files that cannot be used, by path, with the reason (each new file is probed once)."""
    infos = app.postprocess.upscalers.list(include_unusable=True)
    return {Path(i.model_path).resolve(): i.reason or "unusable" for i in infos if not i.usable and i.model_path}


def _unusable_loras(app) -> dict[Path, str]:
    """LoRA files that cannot be read or are refused as unsafe (pickles are scanned, never run), with the reason."""
    return {entry.path.resolve(): entry.error for entry in app.loras.available() if entry.error}


def _unusable_embeddings(app) -> dict[Path, str]:
    """Embedding files that cannot be read or were refused as unsafe, with the reason."""
    from sdstudio.prompts.embeddings import EmbeddingDatabase

    errors = EmbeddingDatabase(app.paths.folder("embedding")).errors
    return {path.resolve(): reason for path, reason in errors.items()}


# The kinds whose files are checked when listed: kind -> files that cannot be used, with the reason.
UNUSABLE_CHECKS = {"upscaler": _unusable_upscalers, "lora": _unusable_loras, "embedding": _unusable_embeddings}


def run_list(args: argparse.Namespace) -> int:
    """Print the models as a table or JSON; a file that cannot be used (empty, cut short, unsafe...) says why."""
    app = open_app_from_args(args)
    entries = _entries(app, args, with_hashes=True)
    listed = {entry.type for entry in entries}
    unusable = {
        path: why for kind, check in UNUSABLE_CHECKS.items() if kind in listed for path, why in check(app).items()
    }
    for entry in entries:
        if entry.path in unusable:  # the upscaler's own probe says most; the others add what the listing missed
            entry.problem = unusable[entry.path] if entry.type == "upscaler" else entry.problem or unusable[entry.path]
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
        return 0
    if not entries:
        print("no models found")
        return 0
    width = max(len(e.type) for e in entries)
    for entry in entries:
        extra = " (bundled)" if entry.bundled else ""
        reason = f"  unusable: {entry.problem}" if entry.problem else ""
        print(f"{entry.type:<{width}}  {entry.title}{extra}  {entry.path}{reason}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print one model's details as JSON."""
    entry = open_app_from_args(args).models.find(args.type, args.name)
    print(json.dumps(entry.to_json(), indent=2))
    return 0


def run_hash(args: argparse.Namespace) -> int:
    """Hash every model (cached afterwards)."""
    for entry in _entries(open_app_from_args(args), args, with_hashes=True):
        if entry.problem:
            print(f"{entry.name}: not hashed, unusable: {entry.problem}", file=sys.stderr)
        else:
            print(f"{entry.sha256}  {entry.type}  {entry.name}")
    return 0
