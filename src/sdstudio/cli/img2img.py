"""`sdstudio img2img`: image-to-image generation and inpainting.

Takes the txt2img options plus an init image, an optional mask (white = repaint) and
A1111's inpainting options. Files are read here and handed to the engine as images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sdstudio.cli.txt2img import add_common_generation_options, generation_fields, run_requests, split_fixed_code


def register(subparsers) -> None:
    """Add the `img2img` subcommand."""
    parser = subparsers.add_parser(
        "img2img",
        help="image-to-image generation and inpainting",
        description="Image-to-image generation and inpainting.",
    )
    add_common_generation_options(parser)
    parser.add_argument(
        "--init-image",
        "--init-img",
        "--init_img",
        dest="init_images",
        action="append",
        metavar="PATH",
        default=[],
        help=(
            "starting image; repeat for several: image i of the job starts from init image i mod N "
            "(A1111's order), and --n-iter is raised so that each init image is used at least once "
            "(two init images at batch size 1 make two batches)"
        ),
    )
    parser.add_argument("--mask", metavar="PATH", default=None, help="inpainting mask: white = repaint, black = keep")
    parser.add_argument(
        "--denoising-strength",
        "--denoising_strength",
        "--strength",
        dest="denoising_strength",
        type=float,
        default=0.75,
        help="how much to change the image, 0..1 (default: 0.75)",
    )
    parser.add_argument(
        "--resize-mode",
        dest="resize_mode",
        type=int,
        choices=(0, 1, 2, 3),
        default=0,
        help="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale",
    )
    parser.add_argument("--mask-blur", dest="mask_blur", type=int, default=4, help="mask blur in pixels (default: 4)")
    parser.add_argument(
        "--inpainting-fill",
        dest="inpainting_fill",
        type=int,
        choices=(0, 1, 2, 3),
        default=1,
        help="masked content: 0 fill, 1 original (default), 2 latent noise, 3 latent nothing",
    )
    parser.add_argument(
        "--inpaint-area",
        dest="inpaint_area",
        choices=("whole", "masked"),
        default="whole",
        help="inpaint the whole picture (default) or only the masked area at full resolution",
    )
    parser.add_argument(
        "--padding",
        dest="inpaint_full_res_padding",
        type=int,
        default=32,
        help="padding around the mask for --inpaint-area masked (default: 32)",
    )
    parser.add_argument(
        "--mask-invert", dest="inpainting_mask_invert", action="store_true", help="repaint the black area instead"
    )
    parser.set_defaults(handler=run_img2img)


def run_img2img(args: argparse.Namespace) -> int:
    """Handler: validate every request (images decoded) first, then generate."""
    from sdstudio.engine.request import Img2ImgRequest
    from sdstudio.errors import InvalidRequest

    if not args.init_images:
        raise InvalidRequest("init_images", "give a starting image with --init-image PATH")
    init = [Path(p).expanduser() for p in args.init_images]
    own = dict(
        init_images=init,
        mask=Path(args.mask).expanduser() if args.mask else None,
        denoising_strength=args.denoising_strength,
        resize_mode=args.resize_mode,
        mask_blur=args.mask_blur,
        inpainting_fill=args.inpainting_fill,
        inpaint_full_res=args.inpaint_area == "masked",
        inpaint_full_res_padding=args.inpaint_full_res_padding,
        inpainting_mask_invert=int(args.inpainting_mask_invert),
    )
    requests: list[Img2ImgRequest] = []
    for fields in generation_fields(args, "img2img", own):
        # image i starts from init[i % N] (engine); enough batches that every init image gets one
        fields["n_iter"] = max(fields["n_iter"], -(-len(init) // max(1, fields["batch_size"])))
        for number, part in enumerate(split_fixed_code(fields, args.fixed_code)):
            # --fixed_code runs each batch as its own job: start it at the init image its batch has in one job
            first = number * part["batch_size"] % len(init)
            requests.append(Img2ImgRequest(**{**part, "init_images": init[first:] + init[:first]}))
    return run_requests(args, requests, "img2img")
