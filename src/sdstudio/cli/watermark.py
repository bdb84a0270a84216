"""`sdstudio watermark`: embed or read the invisible DWT-DCT watermark (CompVis style)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the `watermark` subcommand with `decode` and `encode`."""
    parser = subparsers.add_parser(
        "watermark",
        help="invisible watermark (DWT-DCT) decoding and encoding",
        description="Read or embed the invisible DWT-DCT watermark the CompVis scripts use.",
    )
    actions = parser.add_subparsers(dest="watermark_action", metavar="ACTION", required=True)

    decode = actions.add_parser("decode", help="print the watermark text of images")
    decode.add_argument("images", nargs="+", metavar="IMAGE")
    decode.add_argument(
        "--length", type=int, default=None, metavar="BYTES", help="message length in bytes (default: that of --expect)"
    )
    decode.add_argument(
        "--expect",
        default=None,
        metavar="TEXT",
        help='message to look for (default "StableDiffusionV1"); exit 1 if any image lacks it',
    )
    decode.set_defaults(handler=run_decode)

    encode = actions.add_parser("encode", help="embed a watermark into an image")
    encode.add_argument("image", metavar="IMAGE")
    encode.add_argument("--out", required=True, metavar="FILE", help="output PNG (text metadata of the input is kept)")
    encode.add_argument("--message", default=None, metavar="TEXT", help='text to embed (default "StableDiffusionV1")')
    encode.set_defaults(handler=run_encode)


def run_decode(args: argparse.Namespace) -> int:
    """Print `FILE: TEXT` for each image; exit 1 when an image lacks the expected message."""
    from sdstudio.cli.common import image_decode_limit
    from sdstudio.postprocess.image_files import open_image
    from sdstudio.postprocess.watermark import DEFAULT_WATERMARK, decode_watermark

    expected = args.expect or DEFAULT_WATERMARK
    length = args.length or len(expected.encode("utf-8"))
    missing = 0
    limit = image_decode_limit(args)
    for name in args.images:
        decoded = decode_watermark(open_image(name, max_megapixels=limit), length)
        shown = (
            decoded.text
            if decoded.text is not None and decoded.text.isprintable()
            else f"(no readable watermark: {decoded.raw.hex()})"
        )
        found = decoded.matches(expected)
        missing += not found
        print(f"{name}: {shown}" + ("" if found else f"  [does not match {expected!r}]"))
    return 1 if missing else 0


def run_encode(args: argparse.Namespace) -> int:
    """Write a watermarked PNG copy of an image and print its path."""
    from sdstudio.cli.common import image_decode_limit
    from sdstudio.errors import InvalidRequest
    from sdstudio.postprocess.image_files import open_image, save_png, text_items
    from sdstudio.postprocess.watermark import DEFAULT_WATERMARK, add_watermark

    if Path(args.out).suffix.lower() != ".png":
        raise InvalidRequest("--out", f"{args.out!r} must be a .png file (lossy formats weaken the watermark)")
    source = open_image(args.image, max_megapixels=image_decode_limit(args))
    marked = add_watermark(source, args.message or DEFAULT_WATERMARK)
    out = save_png(marked, Path(args.out).resolve(), text_items(source))
    print(out)
    return 0
