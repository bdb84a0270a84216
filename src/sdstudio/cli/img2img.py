"""`sdstudio img2img`: image-to-image generation and inpainting.

Takes the txt2img options plus an init image, an optional mask (white = repaint) and
A1111's inpainting options. Files are read here and handed to the engine as images.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    add_batch_options(parser)
    parser.set_defaults(handler=run_img2img)


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    """A1111's img2img Batch tab: every image of a folder with the same settings."""
    from sdstudio.engine.batch_directory import PNG_INFO_PROPS

    batch = parser.add_argument_group("batch from a folder (instead of --init-image)")
    batch.add_argument(
        "--input-dir",
        "--img2img-batch-input-dir",
        "--img2img_batch_input_dir",
        dest="input_dir",
        metavar="DIR",
        default=None,
        help="process every image in DIR (.png .jpg .jpeg .webp .tif .tiff, subfolders too); unreadable files "
        "are skipped with a warning",
    )
    batch.add_argument(
        "--output-dir",
        "--img2img-batch-output-dir",
        "--img2img_batch_output_dir",
        dest="output_dir",
        metavar="DIR",
        default=None,
        help="save each result in DIR under its input's name (NAME-1, NAME-2... for several); "
        "default: the normal img2img output folder and names",
    )
    batch.add_argument(
        "--mask-dir",
        "--img2img-batch-inpaint-mask-dir",
        "--img2img_batch_inpaint_mask_dir",
        dest="mask_dir",
        metavar="DIR",
        default=None,
        help="inpaint with the mask of the same file name (stem) from DIR; one file in DIR masks every image",
    )
    batch.add_argument(
        "--use-png-info",
        "--img2img-batch-use-png-info",
        dest="use_png_info",
        action="store_true",
        help="take parameters from each input's own infotext (its prompt is appended to --prompt)",
    )
    batch.add_argument(
        "--png-info-props",
        dest="png_info_props",
        nargs="+",
        choices=PNG_INFO_PROPS,
        default=list(PNG_INFO_PROPS),
        metavar="NAME",
        help=f"which parameters --use-png-info takes (default: all of {', '.join(PNG_INFO_PROPS)})",
    )


def img2img_options(args: argparse.Namespace) -> dict[str, Any]:
    """The img2img request fields its own options give, all but the images."""
    return dict(
        denoising_strength=args.denoising_strength,
        resize_mode=args.resize_mode,
        mask_blur=args.mask_blur,
        inpainting_fill=args.inpainting_fill,
        inpaint_full_res=args.inpaint_area == "masked",
        inpaint_full_res_padding=args.inpaint_full_res_padding,
        inpainting_mask_invert=int(args.inpainting_mask_invert),
    )


def run_img2img(args: argparse.Namespace) -> int:
    """Handler: validate every request (images decoded) first, then generate."""
    from sdstudio.cli.common import image_decode_limit
    from sdstudio.engine.request import Img2ImgRequest, decode_img2img_images
    from sdstudio.errors import InvalidRequest

    if args.input_dir is not None:
        return run_img2img_batch(args)
    if not args.init_images:
        raise InvalidRequest(
            "init_images", "give a starting image with --init-image PATH (or a folder with --input-dir)"
        )
    files: dict[str, Any] = {"init_images": [Path(p).expanduser() for p in args.init_images]}
    files["mask"] = Path(args.mask).expanduser() if args.mask else None
    images = decode_img2img_images(files, image_decode_limit(args))  # each file decoded once, under the limit
    init = images["init_images"]
    own = {**img2img_options(args), **images}
    jobs: list[dict[str, Any]] = []
    for fields in generation_fields(args, "img2img", own):
        # image i starts from init[i % N] (engine); enough batches that every init image gets one
        fields["n_iter"] = max(fields["n_iter"], -(-len(init) // max(1, fields["batch_size"])))
        for number, part in enumerate(split_fixed_code(fields, args.fixed_code)):
            # --fixed_code runs each batch as its own job: start it at the init image its batch has in one job
            first = number * part["batch_size"] % len(init)
            jobs.append({**part, "init_images": init[first:] + init[:first]})
    if args.server:
        from sdstudio.cli.remote import run_remote

        return run_remote(args, jobs, "img2img")
    return run_requests(args, [Img2ImgRequest(**job) for job in jobs], "img2img")


def run_img2img_batch(args: argparse.Namespace) -> int:
    """Handler for --input-dir: check the folders and options, then process the files, printing each saved path."""
    import sys

    from sdstudio.cli.common import open_app_from_args
    from sdstudio.cli.model_args import save_pending_hashes
    from sdstudio.engine.batch_directory import Img2ImgBatch
    from sdstudio.engine.service import GenerationControl
    from sdstudio.errors import InvalidRequest

    if args.init_images:
        raise InvalidRequest("img2img_batch_input_dir", "give either --input-dir (a folder) or --init-image, not both")
    if args.server:
        raise InvalidRequest("server", "--input-dir runs here only; send single images with --init-image")
    if args.mask:
        raise InvalidRequest("mask", "--mask goes with --init-image; give a batch its masks with --mask-dir")
    if args.fixed_code:
        raise InvalidRequest("fixed_code", "not supported with --input-dir (every file starts from the same seed)")
    props = tuple(args.png_info_props) if args.use_png_info else ()
    batches = [
        Img2ImgBatch.create(fields, args.input_dir, args.output_dir, args.mask_dir, props)
        for fields in generation_fields(args, "img2img", img2img_options(args))
    ]
    save_pending_hashes(args)  # everything passed validation: the data dir may be written now
    app = open_app_from_args(args)
    if getattr(args, "ckpt", None) or getattr(args, "model", None):
        app.engine.select_model(ckpt=getattr(args, "ckpt", None), model=getattr(args, "model", None))
    control = GenerationControl(preview_every=0)
    warned: set[str] = set()
    for batch in batches:
        for item in batch.items(app.engine, control):
            for path in item.saved_paths:
                print(path, flush=True)
            for warning in [item.warning, *(item.result.warnings if item.result else [])]:
                if warning and warning not in warned:
                    warned.add(warning)
                    print(f"warning: {warning}", file=sys.stderr)
            if item.result is not None and item.result.interrupted:
                return 130
    return 0
