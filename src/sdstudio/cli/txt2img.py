"""`sdstudio txt2img`: text-to-image generation.

Long options follow A1111's field names; the CompVis `scripts/txt2img.py` names are
accepted as aliases (`--H --W --C --f --scale --n_samples --n_iter --n_rows --ddim_steps
--ddim_eta --plms --fixed_code --skip_grid --skip_save --from-file --precision`).
`--from-file` lines may be A1111 "Prompts from file or textbox" option lines, and
`--infotext` generates from pasted A1111 parameters. The request is validated before any
model is loaded, so a bad option costs nothing and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sdstudio.cli.common import (
    given_options,
    image_decode_limit,
    open_app_from_args,
    read_image_infotext,
    record_given_options,
    script_fields,
)
from sdstudio.cli.model_args import add_model_arguments, latent_factor, native_size, save_pending_hashes
from sdstudio.cli.remote import add_server_arguments


def add_common_generation_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by txt2img and img2img (A1111 StableDiffusionProcessing fields)."""
    record_given_options(parser)  # --infotext fills only what the command line leaves out
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
    parser.add_argument(
        "--eta",
        "--ddim_eta",
        "--ddim-eta",
        dest="eta",
        type=float,
        default=None,
        help="noise multiplier for ancestral samplers / DDIM eta",
    )
    parser.add_argument(
        "--clip-skip",
        dest="clip_skip",
        type=int,
        default=None,
        help="stop CLIP this many layers from the end (1 = last layer)",
    )
    parser.add_argument("--tiling", action="store_true", help="make a seamlessly tiling image")
    parser.add_argument(
        "--refiner",
        "--refiner-checkpoint",
        dest="refiner_checkpoint",
        metavar="NAME",
        default=None,
        help="A1111's refiner: this checkpoint takes over part-way through the denoising",
    )
    parser.add_argument(
        "--refiner-switch-at",
        "--refiner_switch_at",
        dest="refiner_switch_at",
        type=float,
        default=0.8,
        metavar="FRACTION",
        help="how much of the denoising the first checkpoint does before the refiner takes over (default: 0.8)",
    )
    parser.add_argument(
        "--restore-faces", dest="restore_faces", action="store_true", help="run face restoration on the results"
    )
    parser.add_argument("--outdir", metavar="DIR", default=None, help="save images under DIR (grids under DIR/grids)")
    parser.add_argument("--skip-grid", "--skip_grid", dest="skip_grid", action="store_true", help="do not save a grid")
    parser.add_argument(
        "--skip-save",
        "--skip_save",
        dest="skip_save",
        action="store_true",
        help="save no single images, only the grid (unless --skip-grid)",
    )
    parser.add_argument(
        "--n-rows",
        "--n_rows",
        dest="n_rows",
        type=int,
        default=None,
        help="grid rows (A1111's n_rows: 0 = as many as the batch size, -1 = about square; default: settings, -1)",
    )
    parser.add_argument(
        "--C",
        dest="latent_channels",
        metavar="CHANNELS",
        type=int,
        default=None,
        help="CompVis: latent channels; 4, the only value the models have",
    )
    parser.add_argument(
        "--f",
        dest="downsampling_factor",
        metavar="FACTOR",
        type=int,
        default=None,
        help="CompVis: downsampling factor; 8, or the checkpoint's own (4 for the bundled model)",
    )
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
        help=(
            "generate for every line of FILE: a prompt, or A1111's option line "
            '(--prompt "..." --negative_prompt "..." --steps N --seed N --cfg_scale X --sampler_name "..." ...)'
        ),
    )
    parser.add_argument(
        "--infotext",
        metavar="TEXT|IMAGE",
        default=None,
        help=(
            "generate from A1111 generation parameters: the text, or an image that has them (see `pnginfo`); "
            "options given on the command line override its fields"
        ),
    )
    parser.add_argument(
        "--format",
        dest="samples_format",
        choices=("png", "jpg", "webp"),
        default=None,
        help="image file format (default: settings, png)",
    )
    parser.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--script",
        default=None,
        metavar="NAME",
        help="run a script (as in the web UI's Script dropdown), e.g. 'X/Y/Z plot'; see `extensions list`",
    )
    parser.add_argument(
        "--script-args",
        default=None,
        metavar="JSON",
        help="the script's arguments as a JSON list, in its controls' order (the API's script_args)",
    )
    parser.add_argument(
        "--alwayson-script",
        dest="alwayson_scripts",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="arguments of an always-on script as a JSON list (repeatable; the API's alwayson_scripts)",
    )
    add_model_arguments(parser)
    add_server_arguments(parser)


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
        "--hr-checkpoint",
        "--hr-checkpoint-name",
        dest="hr_checkpoint_name",
        metavar="NAME",
        default=None,
        help="run the hires pass on this checkpoint (default: the same one)",
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
        do_not_save_samples=args.skip_save,
        do_not_save_grid=args.skip_grid,
        refiner_checkpoint=args.refiner_checkpoint,
        refiner_switch_at=args.refiner_switch_at if args.refiner_checkpoint else None,
    )
    overrides: dict[str, Any] = {}
    if args.clip_skip is not None:
        overrides["CLIP_stop_at_last_layers"] = args.clip_skip
    if args.n_rows is not None:
        overrides["n_rows"] = args.n_rows
    if args.samples_format:
        overrides["samples_format"] = args.samples_format
    if overrides:
        fields["override_settings"] = overrides
    if args.outdir:
        outdir = Path(args.outdir).expanduser().resolve()
        fields["outpath_samples"] = str(outdir)
        fields["outpath_grids"] = str(outdir / "grids")
    return fields


def check_compvis_shape(args: argparse.Namespace) -> None:
    """CompVis' --C and --f describe the latent space; only the values the checkpoint has are accepted."""
    from sdstudio.errors import InvalidRequest

    if args.latent_channels not in (None, 4):
        raise InvalidRequest(
            "C", f"--C {args.latent_channels}: the models have 4 latent channels; leave --C out or give --C 4"
        )
    if args.downsampling_factor not in (None, 8) and args.downsampling_factor != latent_factor(args):
        raise InvalidRequest(
            "f",
            f"--f {args.downsampling_factor}: the checkpoint downsamples by {latent_factor(args)}; "
            "leave --f out or give that (or CompVis' 8)",
        )


# What a --from-file line may not change here (the parser is shared with the web's script).
_REFUSED_LINE_OPTIONS = {"sd_model": "cannot change per line; choose the checkpoint with --model or --ckpt"}


def parse_prompt_line(line: str, number: int) -> dict[str, Any]:
    """Request fields from one --from-file line: a plain prompt, or A1111's `--prompt "..." --steps N ...`."""
    from sdstudio.engine.prompt_lines import parse_prompt_line as parse_line

    fields = parse_line(line, number, "from_file", _REFUSED_LINE_OPTIONS)
    for name in ("outpath_samples", "outpath_grids"):
        if name in fields:  # as --outdir: relative to where sdstudio runs
            fields[name] = str(Path(fields[name]).expanduser().resolve())
    return fields


def lines_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    """What each job sets itself: one entry per --from-file line (blank lines skipped), else one empty entry."""
    from sdstudio.errors import InvalidRequest

    if not args.from_file:
        return [{}]
    try:
        lines = Path(args.from_file).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequest("from_file", f"cannot read {args.from_file}: {exc.strerror or exc}") from None
    jobs = [parse_prompt_line(line.strip(), number) for number, line in enumerate(lines, 1) if line.strip()]
    if not jobs:
        raise InvalidRequest("from_file", f"{args.from_file} has no prompts")
    return jobs


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

# request field -> the options (dests) that set it, where the names differ; any other field
# is set by the option of its own name, or by none (then the infotext's value always counts)
_FIELD_OPTIONS = {
    "prompt": ("prompt", "prompt_arg"),
    "sampler_name": ("sampler_name", "plms"),
    "seed_resize_from_w": ("seed_resize_from",),
    "seed_resize_from_h": ("seed_resize_from",),
    "hr_resize_x": ("hr_resize",),
    "hr_resize_y": ("hr_resize",),
}


def infotext_argument(args: argparse.Namespace) -> str | None:
    """The --infotext text: the value itself, or the parameters stored in the image it names."""
    from sdstudio.errors import InvalidRequest

    value = args.infotext
    if not value:
        return None
    path = Path(value).expanduser()
    try:
        is_file = "\n" not in value and path.is_file()
    except OSError:  # e.g. a long text is no file name
        is_file = False
    if not is_file and path.suffix.lower() not in _IMAGE_SUFFIXES:
        return str(value)
    text = read_image_infotext(path, "infotext", image_decode_limit(args))
    if not text:
        raise InvalidRequest("infotext", f"{path}: no generation parameters found")
    return text


def pasted_fields(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The --infotext fields that no option given on the command line sets (A1111 paste, then the flags)."""
    text = infotext_argument(args)
    if text is None:
        return {}
    from sdstudio.engine.infotext import request_fields_from_infotext

    given = given_options(args) | ({"prompt_arg"} if args.prompt_arg is not None else set())
    return {
        name: value
        for name, value in request_fields_from_infotext(text, kind).items()
        if name == "override_settings" or not given.intersection(_FIELD_OPTIONS.get(name, (name,)))
    }


def generation_fields(args: argparse.Namespace, kind: str, own: dict[str, Any]) -> list[dict[str, Any]]:
    """Request fields for each job: the options (shared and the command's `own`) over --infotext, under a line's."""
    check_compvis_shape(args)
    prompt = args.prompt if args.prompt is not None else (args.prompt_arg or "")
    fields = {**common_request_fields(args, prompt), **own}
    pasted = pasted_fields(args, kind)
    settings = {**pasted.pop("override_settings", {}), **fields.get("override_settings", {})}
    fields.update(pasted)
    if settings:
        fields["override_settings"] = settings
    return [{**fields, **line} for line in lines_from_args(args)]


def split_fixed_code(fields: dict[str, Any], fixed_code: bool) -> list[dict[str, Any]]:
    """CompVis --fixed_code: every batch starts from the same noise, i.e. the same seeds."""
    if not fixed_code or fields.get("n_iter", 1) == 1:
        return [fields]
    from sdstudio.engine.seeds import fixed_seed

    seed = fixed_seed(fields.get("seed", -1))
    return [{**fields, "seed": seed, "n_iter": 1} for _ in range(fields["n_iter"])]


def script_selection(args: argparse.Namespace):
    """The scripts the command line names (--script, --script-args, --alwayson-script) as the engine takes them."""
    from sdstudio.engine.scripting import ScriptSelection

    return ScriptSelection(*script_fields(args))


def run_requests(args: argparse.Namespace, requests: list, kind: str) -> int:
    """Open the app, run each request with a progress bar, print the saved paths."""
    from sdstudio.engine.service import GenerationControl

    scripts = script_selection(args)
    save_pending_hashes(args)  # every request passed validation: the data dir may be written now
    app = open_app_from_args(args)
    app.scripts.for_job(kind, scripts)  # an unknown script or a bad argument stops here, before any model loads
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
                result = run(request, control, scripts)
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
    """Handler: validate every request first, then generate (here, or on the --server)."""

    hr_x, hr_y = _size(args.hr_resize, "hr_resize_x")
    own = dict(
        enable_hr=args.enable_hr,
        hr_scale=args.hr_scale,
        hr_upscaler=args.hr_upscaler,
        hr_second_pass_steps=args.hr_second_pass_steps,
        hr_resize_x=hr_x,
        hr_resize_y=hr_y,
        hr_checkpoint_name=args.hr_checkpoint_name,
        denoising_strength=args.denoising_strength,
    )
    jobs = generation_fields(args, "txt2img", own)
    if args.server:  # the server validates and runs them; this process stays free of torch
        from sdstudio.cli.remote import run_remote

        return run_remote(args, [f for fields in jobs for f in split_fixed_code(fields, args.fixed_code)], "txt2img")
    from sdstudio.engine.request import Txt2ImgRequest

    requests: list[Txt2ImgRequest] = []
    for fields in jobs:
        requests.extend(Txt2ImgRequest(**f) for f in split_fixed_code(fields, args.fixed_code))
    return run_requests(args, requests, "txt2img")
