"""`sdstudio merge`: A1111's Checkpoint Merger from the command line."""

from __future__ import annotations

import argparse
import sys

from sdstudio.cli.common import open_app_from_args

# Flag -> A1111 field (`run_modelmerger`'s parameter names); errors naming a field name its flag instead.
FLAGS = {
    "--primary-model-name": "primary_model_name",
    "--secondary-model-name": "secondary_model_name",
    "--tertiary-model-name": "tertiary_model_name",
    "--interp-method": "interp_method",
    "--multiplier": "multiplier",
    "--save-as-half": "save_as_half",
    "--custom-name": "custom_name",
    "--checkpoint-format": "checkpoint_format",
    "--config-source": "config_source",
    "--bake-in-vae": "bake_in_vae",
    "--discard-weights": "discard_weights",
    "--no-save-metadata": "save_metadata",
    "--no-merge-recipe": "add_merge_recipe",
    "--no-copy-metadata": "copy_metadata_fields",
    "--metadata-json": "metadata_json",
}


def register(subparsers) -> None:
    """Add the `merge` subcommand."""
    # Values are checked by MergeRequest (importing it here would load torch for every `sdstudio --help`).
    parser = subparsers.add_parser(
        "merge",
        help="merge checkpoints (Checkpoint Merger)",
        description="Merge two or three checkpoints into a new one in models/Stable-diffusion, as A1111's "
        "Checkpoint Merger: Weighted sum A*(1-M) + B*M, Add difference A + (B-C)*M, or No interpolation "
        "(format change, VAE bake). Models are named as `models list` shows them (name, title, hash or path). "
        "An existing file is never overwritten.",
    )
    parser.add_argument("--primary-model-name", "-a", required=True, metavar="MODEL", help="model A")
    parser.add_argument("--secondary-model-name", "-b", default="", metavar="MODEL", help="model B")
    parser.add_argument("--tertiary-model-name", "-c", default="", metavar="MODEL", help="model C (Add difference)")
    parser.add_argument(
        "--interp-method",
        default="Weighted sum",
        metavar="METHOD",
        help='"Weighted sum" (default), "Add difference" or "No interpolation"',
    )
    parser.add_argument("--multiplier", "-m", type=float, default=0.3, metavar="M", help="M (default 0.3)")
    parser.add_argument("--save-as-half", action="store_true", help="save float32 weights as float16")
    parser.add_argument(
        "--custom-name", default="", metavar="NAME", help="file name without extension (default: A1111's name)"
    )
    parser.add_argument("--checkpoint-format", default="safetensors", metavar="FORMAT", help="safetensors or ckpt")
    parser.add_argument(
        "--config-source",
        default="A, B or C",
        metavar="SOURCE",
        help='copy the yaml from "A, B or C" (default: the first that has one), "B", "C" or "Don\'t" (or 0-3)',
    )
    parser.add_argument("--bake-in-vae", default="None", metavar="VAE", help="a VAE from models/VAE to bake in")
    parser.add_argument("--discard-weights", default="", metavar="REGEX", help="leave out weights matching REGEX")
    parser.add_argument("--no-save-metadata", action="store_true", help="write no safetensors metadata")
    parser.add_argument("--no-merge-recipe", action="store_true", help="no sd_merge_recipe / sd_merge_models")
    parser.add_argument("--no-copy-metadata", action="store_true", help="do not copy the merged models' metadata")
    parser.add_argument("--metadata-json", default="{}", metavar="JSON", help="more metadata, a JSON object")
    parser.set_defaults(handler=run)


def build_request(args: argparse.Namespace):
    """The MergeRequest (A1111 field names) from the command line; a bad value names its flag."""
    from sdstudio.errors import InvalidRequest
    from sdstudio.models.merge import MergeRequest

    try:
        return MergeRequest(
            primary_model_name=args.primary_model_name,
            secondary_model_name=args.secondary_model_name,
            tertiary_model_name=args.tertiary_model_name,
            interp_method=args.interp_method,
            multiplier=args.multiplier,
            save_as_half=args.save_as_half,
            custom_name=args.custom_name,
            checkpoint_format=args.checkpoint_format,
            config_source=args.config_source,
            bake_in_vae=args.bake_in_vae,
            discard_weights=args.discard_weights,
            save_metadata=not args.no_save_metadata,
            add_merge_recipe=not args.no_merge_recipe,
            copy_metadata_fields=not args.no_copy_metadata,
            metadata_json=args.metadata_json,
        )
    except InvalidRequest as exc:
        raise InvalidRequest(_flag(exc.field), exc.reason) from None


def _flag(field: str) -> str:
    return next((flag for flag, name in FLAGS.items() if name == field), field)


def run(args: argparse.Namespace) -> int:
    """Merge, printing progress on stderr and the new checkpoint's path on stdout."""
    from sdstudio.errors import InvalidRequest, NotFound

    request = build_request(args)
    app = open_app_from_args(args)
    last = [""]

    def progress(text: str, done: int, total: int) -> None:
        if text != last[0] or done == total:
            print(f"{text} {done}/{total}", file=sys.stderr)
            last[0] = text

    try:
        result = app.merger.merge(request, progress=progress)
    except InvalidRequest as exc:
        raise InvalidRequest(_flag(exc.field), exc.reason) from None
    except NotFound as exc:
        field, _, rest = str(exc).partition(": ")
        raise NotFound(f"{_flag(field)}: {rest}" if field in FLAGS.values() else str(exc)) from None
    print(f"{result.message} ({result.entry.title})", file=sys.stderr)
    if result.config is not None:
        print(f"config copied to {result.config}", file=sys.stderr)
    print(result.path)
    return 0
