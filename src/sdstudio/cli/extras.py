"""`sdstudio extras`: upscaling and face restoration (A1111's Extras tab) on images or folders."""

from __future__ import annotations

import argparse
import sys

from sdstudio.cli.common import open_app_from_args


def register(subparsers) -> None:
    """Add the `extras` subcommand."""
    parser = subparsers.add_parser(
        "extras",
        help="upscaling and face restoration (Extras)",
        description="Upscale images and restore faces, as A1111's Extras tab. Folders are processed file by file; "
        "results are saved as PNG with the source's infotext kept and the post-processing appended.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    parser.add_argument(
        "--upscaler",
        default="None",
        metavar="NAME",
        help='upscaler 1, e.g. Lanczos or a model file name (an unknown name lists the available ones; default "None")',
    )
    parser.add_argument("--scale", type=float, default=2.0, metavar="X", help="upscale by this factor (default 2)")
    parser.add_argument("--resize-to", default=None, metavar="WxH", help="upscale to this size instead of --scale")
    parser.add_argument(
        "--no-crop", action="store_true", help="with --resize-to: keep the aspect ratio instead of cropping to fit"
    )
    parser.add_argument("--upscaler-2", default="None", metavar="NAME", help="second upscaler, blended over the first")
    parser.add_argument(
        "--upscaler-2-visibility", type=float, default=0.0, metavar="V", help="weight of the second upscaler, 0..1"
    )
    parser.add_argument(
        "--face-restorer",
        type=str.lower,
        choices=["gfpgan", "codeformer"],
        default=None,
        help="restore faces after upscaling",
    )
    parser.add_argument(
        "--face-restorer-visibility",
        type=float,
        default=1.0,
        metavar="V",
        help="blend of the restored faces, 0..1 (default 1)",
    )
    parser.add_argument(
        "--codeformer-weight",
        type=float,
        default=None,
        metavar="W",
        help="CodeFormer fidelity, 0 = strongest effect, 1 = weakest (default: setting code_former_weight)",
    )
    parser.add_argument(
        "--outdir", default=None, metavar="DIR", help="output folder (default: outputs/extras-images in the data dir)"
    )
    parser.set_defaults(handler=run)


def _size(text: str) -> tuple[int, int]:
    from sdstudio.errors import InvalidRequest

    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise InvalidRequest("--resize-to", f"expected WIDTHxHEIGHT such as 1024x768, got {text!r}") from None
    if width < 1 or height < 1:
        raise InvalidRequest("--resize-to", f"width and height must be positive, got {text!r}")
    return width, height


def build_options(args: argparse.Namespace, default_codeformer_weight: float):
    """ExtrasOptions (A1111 field names) from the command line."""
    from sdstudio.errors import InvalidRequest
    from sdstudio.postprocess.extras import ExtrasOptions

    fields: dict = {
        "upscaler_1": args.upscaler,
        "upscaling_resize": args.scale,
        "upscaler_2": args.upscaler_2,
        "extras_upscaler_2_visibility": args.upscaler_2_visibility,
    }
    if args.resize_to:
        width, height = _size(args.resize_to)
        fields.update(
            resize_mode=1, upscaling_resize_w=width, upscaling_resize_h=height, upscaling_crop=not args.no_crop
        )
    if args.face_restorer == "gfpgan":
        fields["gfpgan_visibility"] = args.face_restorer_visibility
    elif args.face_restorer == "codeformer":
        fields["codeformer_visibility"] = args.face_restorer_visibility
        fields["codeformer_weight"] = (
            default_codeformer_weight if args.codeformer_weight is None else args.codeformer_weight
        )
    flags = {
        "upscaling_resize": "--scale",
        "extras_upscaler_2_visibility": "--upscaler-2-visibility",
        "gfpgan_visibility": "--face-restorer-visibility",
        "codeformer_visibility": "--face-restorer-visibility",
        "codeformer_weight": "--codeformer-weight",
        "upscaling_resize_w": "--resize-to",
        "upscaling_resize_h": "--resize-to",
    }
    try:
        return ExtrasOptions(**fields)
    except InvalidRequest as exc:  # named after the A1111 field: say which flag instead
        raise InvalidRequest(flags.get(exc.field, exc.field), exc.reason) from None


def run(args: argparse.Namespace) -> int:
    """Process the images and print the path of each saved file."""
    app = open_app_from_args(args)
    options = build_options(args, app.settings.code_former_weight)
    from sdstudio.errors import NotFound

    try:
        result = app.postprocess.run_files(args.images, options, save=True, outdir=args.outdir)
    except NotFound as exc:  # the service names API fields; say which flag instead
        message = str(exc)
        for field, flag in (("upscaler_1:", "--upscaler:"), ("upscaler_2:", "--upscaler-2:")):
            if message.startswith(field):
                raise NotFound(flag + message[len(field) :]) from None
        raise
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for item in result.images:
        print(item.saved_path)
    return 0
