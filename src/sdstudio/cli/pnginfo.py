"""`sdstudio pnginfo`: reading generation parameters from an image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    """Add the `pnginfo` subcommand."""
    parser = subparsers.add_parser(
        "pnginfo",
        help="reading generation parameters from an image",
        description="Print the generation parameters (A1111 infotext) stored in an image.",
    )
    parser.add_argument("image", metavar="IMAGE", help="PNG, JPEG or WebP file")
    parser.add_argument(
        "--json", action="store_true", help="print the parameters as JSON request fields instead of the text"
    )
    parser.set_defaults(handler=run_pnginfo)


def run_pnginfo(args: argparse.Namespace) -> int:
    """Handler: print the infotext, or its fields as JSON; exit 1 when the image has none."""
    import sys

    from sdstudio.cli.common import image_decode_limit, read_image_infotext
    from sdstudio.engine.infotext import parse_generation_parameters, request_fields_from_parameters

    path = Path(args.image).expanduser()
    text = read_image_infotext(path, "image", image_decode_limit(args))
    if not text:
        print(f"{path}: no generation parameters found", file=sys.stderr)
        return 1
    if args.json:
        params = parse_generation_parameters(text)
        print(
            json.dumps(
                {"infotext": text, "parameters": params, "fields": request_fields_from_parameters(params)},
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        print(text)
    return 0
