"""`sdstudio txt2img`: text-to-image generation.

Long options follow A1111's field names; the CompVis `scripts/txt2img.py` names are
accepted as aliases (`--H --W --scale --n_samples --n_iter --ddim_steps --plms
--fixed_code --skip_grid --from-file`). The request is validated before any model is
loaded, so a bad option costs nothing and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sdstudio.cli.common import open_app_from_args
from sdstudio.cli.model_args import add_model_arguments, native_size, save_pending_hashes


def add_common_generation_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by txt2img and img2img (A1111 StableDiffusionProcessing fields)."""
    parser.add_argument("prompt_arg", nargs="?", metavar="PROMPT", help="the prompt (same as --prompt)")
    parser.add_argument(
        "--prompt", default=None, help="the prompt (A1111 syntax: (emphasis:1.2), [from:to:when], AND, <lora:...>)"
    )
    parser.add_argument(
        "--negative-prompt",
        "--negative_prompt",
        dest="negative_prompt",
        default="",
        help="what to keep out of the image",
    )
    parser.add_argument("--styles", nargs="*", default=[], metavar="STYLE", help="styles from styles.csv to apply")
    parser.add_argument("--seed", type=int, default=-1, help="seed of the first image; -1 = random (default)")
    parser.add_argument("--subseed", type=int, default=-1, help="variation seed (-1 = random)")
    parser.add_argument(
        "--subseed-strength",
        "--variation-strength",
        dest="subseed_strength",
        type=float,
        default=0.0,
        help="variation strength 0..1",
    )
    parser.add_argument(
        "--seed-resize-from", metavar="WxH", default=None, help="keep the composition of a seed found at this size"
    )
    parser.add_argument(
        "--sampler",
        "--sampler-name",
        dest="sampler_name",
        default="DPM++ 2M",
        help="sampler name, e.g. 'Euler a', 'DPM++ 2M', 'DDIM' (default: DPM++ 2M)",
    )
    parser.add_argument("--plms", action="store_true", help="CompVis alias for --sampler PLMS")
    parser.add_argument(
        "--scheduler",
        "--schedule-type",
        dest="scheduler",
        default="Automatic",
        help="schedule type: Automatic, Uniform, Karras, Exponential, Polyexponential, SGM Uniform",
    )
    parser.add_argument(
        "--steps",
        "--ddim_steps",
        "--ddim-steps",
        dest="steps",
        type=int,
        default=20,
        help="sampling steps (default: 20)",
    )
    parser.add_argument(
        "--cfg-scale",
        "--cfg_scale",
        "--scale",
        dest="cfg_scale",
        type=float,
        default=7.0,
        help="classifier-free guidance scale (default: 7)",
    )
    parser.add_argument(
        "--width",
        "--W",
        dest="width",
        type=int,
        default=None,
        help=(
            "image width, a multiple of 8 "
            "(default: the checkpoint's native size, 512 for SD 1.x, 64 for the bundled model)"
        ),
    )
    parser.add_argument(
        "--height",
        "--H",
        dest="height",
        type=int,
        default=None,
        help="image height, a multiple of 8 (default: the checkpoint's native size)",
    )
    parser.add_argument(
        "--batch-size",
        "--batch_size",
        "--n_samples",
        dest="batch_size",
        type=int,
        default=1,
        help="images per batch (default: 1)",
    )
    parser.add_argument(
        "--n-iter",
        "--n_iter",
        "--batch-count",
        dest="n_iter",
        type=int,
        default=1,
        help="number of batches (default: 1)",
    )
    parser.add_argument("--eta", type=float, default=None, help="noise multiplier for ancestral samplers / DDIM eta")
    parser.add_argument(
        "--clip-skip",
        dest="clip_skip",
        type=int,
        default=None,
        help="stop CLIP this many layers from the end (1 = last layer)",
    )
    parser.add_argument("--tiling", action="store_true", help="make a seamlessly tiling image")
    parser.add_argument(
        "--restore-faces", dest="restore_faces", action="store_true", help="run face restoration on the results"
    )
    parser.add_argument("--outdir", metavar="DIR", default=None, help="save images under DIR (grids under DIR/grids)")
    parser.add_argument("--skip-grid", "--skip_grid", dest="skip_grid", action="store_true", help="do not save a grid")
    parser.add_argument(
        "--fixed_code",
        "--fixed-code",
        dest="fixed_code",
        action="store_true",
        help="CompVis: every batch starts from the same noise (same seeds)",
    )
    parser.add_argument(
        "--from-file",
        "--from_file",
        dest="from_file",
        metavar="FILE",
        default=None,
        help="generate for every line of FILE as the prompt",
    )
    parser.add_argument(
        "--format",
        dest="samples_format",
        choices=("png", "jpg", "webp"),
        default=None,
        help="image file format (default: settings, png)",
    )
    parser.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    add_model_arguments(parser)


def register(subparsers) -> None:
    """Add the `txt2img` subcommand."""
    parser = subparsers.add_parser("txt2img", help="text-to-image generation", description="Text-to-image generation.")
    add_common_generation_options(parser)
    parser.add_argument(
        "--hires",
        "--enable-hr",
        dest="enable_hr",
        action="store_true",
        help="hires fix: generate small, upscale, refine",
    )
    parser.add_argument(
        "--hr-scale", dest="hr_scale", type=float, default=2.0, help="hires upscale factor (default: 2)"
    )
    parser.add_argument(
        "--hr-upscaler",
        dest="hr_upscaler",
        default="Latent",
        help="Latent, Latent (nearest), Lanczos, Nearest, or a model upscaler",
    )
    parser.add_argument(
        "--hr-steps",
        "--hr-second-pass-steps",
        dest="hr_second_pass_steps",
        type=int,
        default=0,
        help="hires steps (0 = same as --steps)",
    )
    parser.add_argument(
        "--hr-resize", dest="hr_resize", metavar="WxH", default=None, help="hires target size instead of --hr-scale"
    )
    parser.add_argument(
        "--denoising-strength",
        "--denoising_strength",
        dest="denoising_strength",
        type=float,
        default=0.7,
        help="hires denoising strength (default: 0.7)",
    )
    parser.set_defaults(handler=run_txt2img)


def _size(text: str | None, field: str) -> tuple[int, int]:
    from sdstudio.errors import InvalidRequest

    if not text:
        return 0, 0
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise InvalidRequest(field, f"expected WIDTHxHEIGHT, got {text!r}") from None


def common_request_fields(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    """Request fields from the shared options."""
    resize_w, resize_h = _size(args.seed_resize_from, "seed_resize_from_w")
    fields: dict[str, Any] = dict(
        prompt=prompt,
        negative_prompt=args.negative_prompt,
        styles=list(args.styles),
        seed=args.seed,
        subseed=args.subseed,
        subseed_strength=args.subseed_strength,
        seed_resize_from_w=resize_w or -1,
        seed_resize_from_h=resize_h or -1,
        sampler_name="PLMS" if args.plms else args.sampler_name,
        scheduler=args.scheduler,
        steps=args.steps,
        cfg_scale=args.cfg_scale,
        width=args.width if args.width is not None else native_size(args),
        height=args.height if args.height is not None else native_size(args),
        batch_size=args.batch_size,
        n_iter=args.n_iter,
        eta=args.eta,
        tiling=args.tiling,
        restore_faces=args.restore_faces,
        do_not_save_grid=args.skip_grid,
    )
    overrides: dict[str, Any] = {}
    if args.clip_skip is not None:
        overrides["CLIP_stop_at_last_layers"] = args.clip_skip
    if args.samples_format:
        overrides["samples_format"] = args.samples_format
    if overrides:
        fields["override_settings"] = overrides
    if args.outdir:
        outdir = Path(args.outdir).expanduser().resolve()
        fields["outpath_samples"] = str(outdir)
        fields["outpath_grids"] = str(outdir / "grids")
    return fields


def prompts_from_args(args: argparse.Namespace) -> list[str]:
    """The prompts to run: --from-file lines, else --prompt / the positional prompt."""
    from sdstudio.errors import InvalidRequest

    if args.from_file:
        try:
            lines = Path(args.from_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InvalidRequest("from_file", f"cannot read {args.from_file}: {exc.strerror or exc}") from None
        prompts = [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise InvalidRequest("from_file", f"{args.from_file} has no prompts")
        return prompts
    return [args.prompt if args.prompt is not None else (args.prompt_arg or "")]


def split_fixed_code(fields: dict[str, Any], fixed_code: bool) -> list[dict[str, Any]]:
    """CompVis --fixed_code: every batch starts from the same noise, i.e. the same seeds."""
    if not fixed_code or fields.get("n_iter", 1) == 1:
        return [fields]
    from sdstudio.engine.seeds import fixed_seed

    seed = fixed_seed(fields.get("seed", -1))
    return [{**fields, "seed": seed, "n_iter": 1} for _ in range(fields["n_iter"])]


def run_requests(args: argparse.Namespace, requests: list, kind: str) -> int:
    """Open the app, run each request with a progress bar, print the saved paths."""
    from sdstudio.engine.service import GenerationControl

    save_pending_hashes(args)  # every request passed validation: the data dir may be written now
    app = open_app_from_args(args)
    engine = app.engine
    select = getattr(engine, "select_model", None)
    if select is not None and (getattr(args, "ckpt", None) or getattr(args, "model", None)):
        select(ckpt=getattr(args, "ckpt", None), model=getattr(args, "model", None))
    bars: list = []  # created on the first step, so errors before it print cleanly
    try:
        for request in requests:
            last = {"key": None}

            def on_progress(event, last=last):
                if args.no_progress:
                    return
                if not bars:
                    from tqdm import tqdm

                    bars.append(
                        tqdm(
                            total=event.steps,
                            unit="step",
                            file=sys.stderr,
                            dynamic_ncols=True,
                            leave=False,
                            desc=f"{kind} {event.job_no + 1}/{event.job_count}",
                        )
                    )
                bar = bars[0]
                key = (event.job_no, event.steps)
                if last["key"] != key:
                    last["key"] = key
                    bar.reset(total=event.steps)
                    bar.set_description(f"{kind} {event.job_no + 1}/{event.job_count}")
                bar.n = event.step
                bar.refresh()

            control = GenerationControl(on_progress=on_progress, preview_every=0)
            run = engine.txt2img if kind == "txt2img" else engine.img2img
            try:
                result = run(request, control)
            except KeyboardInterrupt:
                control.interrupt()
                raise
            for path in result.saved_paths:
                print(path)
            if result.grid_path is not None:
                print(result.grid_path)
            for warning in result.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            if result.interrupted:
                return 130
    finally:
        for bar in bars:
            bar.close()
    return 0


def run_txt2img(args: argparse.Namespace) -> int:
    """Handler: validate every request first, then generate."""
    from sdstudio.engine.request import Txt2ImgRequest

    hr_x, hr_y = _size(args.hr_resize, "hr_resize_x")
    requests: list[Txt2ImgRequest] = []
    for prompt in prompts_from_args(args):
        fields = common_request_fields(args, prompt)
        fields.update(
            enable_hr=args.enable_hr,
            hr_scale=args.hr_scale,
            hr_upscaler=args.hr_upscaler,
            hr_second_pass_steps=args.hr_second_pass_steps,
            hr_resize_x=hr_x,
            hr_resize_y=hr_y,
            denoising_strength=args.denoising_strength,
        )
        requests.extend(Txt2ImgRequest(**f) for f in split_fixed_code(fields, args.fixed_code))
    return run_requests(args, requests, "txt2img")
