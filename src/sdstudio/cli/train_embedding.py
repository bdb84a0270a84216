"""`sdstudio create-embedding` and `sdstudio train-embedding`: A1111's textual inversion from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdstudio.errors import InvalidRequest, NotFound

# A1111 field -> flag, so an error names what the user typed.
FLAGS = {
    "name": "--name",
    "embedding_name": "--name",
    "num_vectors_per_token": "--vectors",
    "learn_rate": "--learn-rate",
    "batch_size": "--batch-size",
    "gradient_step": "--gradient-step",
    "steps": "--steps",
    "data_root": "--data",
    "training_width": "--width",
    "training_height": "--height",
    "varsize": "--varsize",
    "repeats": "--repeats",
    "clip_grad_mode": "--clip-grad-mode",
    "clip_grad_value": "--clip-grad-value",
    "tag_drop_out": "--tag-drop-out",
    "latent_sampling_method": "--latent-sampling",
    "create_image_every": "--image-every",
    "save_embedding_every": "--save-every",
    "template_filename": "--template",
    "preview_steps": "--preview-steps",
    "preview_width": "--preview-width",
    "preview_height": "--preview-height",
}


def _base_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base",
        default=None,
        help="checkpoint: a file, or a name, title or hash as `sdstudio models list` shows it "
        "(default: the current one)",
    )


def register(subparsers) -> None:
    """Add the `create-embedding` and `train-embedding` subcommands."""
    create = subparsers.add_parser(
        "create-embedding",
        help="create an empty textual-inversion embedding",
        description="Write embeddings/NAME.pt (A1111's format) with vectors taken from the init text's tokens.",
    )
    create.add_argument("--name", required=True, help="embedding name (what a prompt writes to use it)")
    create.add_argument("--init-text", default="*", help="words whose token embeddings start the vectors (default *)")
    create.add_argument("--vectors", type=int, default=1, help="vectors per token (default 1)")
    create.add_argument("--overwrite", action="store_true", help="replace an existing embedding of that name")
    _base_argument(create)
    create.set_defaults(handler=run_create)

    train = subparsers.add_parser(
        "train-embedding",
        help="train a textual-inversion embedding on a folder of images",
        description=(
            "Train embeddings/NAME.pt on DIR's images with A1111's prompt templates "
            "(DATA_DIR/textual_inversion_templates; [name] and [filewords] from .txt captions or file names). "
            "A run continues from the embedding's saved step; logs, numbered embeddings and previews go to "
            "LOG_DIR/YYYY-MM-DD/NAME."
        ),
    )
    train.add_argument("--name", required=True, help="the embedding to train (create it first)")
    train.add_argument("--data", required=True, help="folder of training images")
    _base_argument(train)
    train.add_argument("--learn-rate", default="0.005", help="rate or schedule such as '0.005:100, 1e-5:1000, 1e-6'")
    train.add_argument("--batch-size", type=int, default=1, help="images per batch (default 1)")
    train.add_argument("--gradient-step", type=int, default=1, help="batches per optimizer step (default 1)")
    train.add_argument("--steps", type=int, default=100000, help="last step (default 100000)")
    train.add_argument("--width", type=int, default=512, help="training width (default 512)")
    train.add_argument("--height", type=int, default=512, help="training height (default 512)")
    train.add_argument("--varsize", action="store_true", help="keep each image's own size")
    train.add_argument("--repeats", type=int, default=1, help="times each image counts per epoch (default 1)")
    train.add_argument(
        "--template", default="style_filewords.txt", help="prompt template file (default style_filewords.txt)"
    )
    train.add_argument("--latent-sampling", default="once", help="once, deterministic or random (default once)")
    train.add_argument("--shuffle-tags", action="store_true", help="shuffle the caption's comma-separated tags")
    train.add_argument("--tag-drop-out", type=float, default=0.0, help="chance of dropping each tag (default 0)")
    train.add_argument("--use-weight", action="store_true", help="use the images' alpha channel as loss weight")
    train.add_argument("--clip-grad-mode", default="disabled", help="disabled, value or norm")
    train.add_argument("--clip-grad-value", default="0.1", help="clipping limit or schedule (default 0.1)")
    train.add_argument("--save-every", type=int, default=500, help="save a numbered embedding every N steps (0: never)")
    train.add_argument("--image-every", type=int, default=500, help="make a preview image every N steps (0: never)")
    train.add_argument(
        "--no-stored-embedding-image", action="store_true", help="no preview copy carrying the embedding"
    )
    train.add_argument("--preview-prompt", default=None, help="prompt of the previews (default: the training prompt)")
    train.add_argument("--preview-negative-prompt", default="", help="negative prompt of the previews")
    train.add_argument("--preview-steps", type=int, default=20, help="sampling steps of the previews (default 20)")
    train.add_argument("--preview-sampler", default="Euler", help="sampler of the previews (default Euler)")
    train.add_argument("--preview-cfg-scale", type=float, default=7.0, help="CFG scale of the previews (default 7)")
    train.add_argument("--preview-seed", type=int, default=-1, help="seed of the previews (default -1: random)")
    train.add_argument("--preview-width", type=int, default=512, help="preview width with --preview-prompt")
    train.add_argument("--preview-height", type=int, default=512, help="preview height with --preview-prompt")
    train.add_argument("--safetensors", action="store_true", help="also write kohya .safetensors (emb_params) copies")
    train.add_argument("--seed", type=int, default=0, help="seed of the data order and noise (default 0)")
    train.add_argument("--log-dir", default=None, help="log folder (default DATA_DIR/textual_inversion)")
    train.set_defaults(handler=run_train)


def _flagged(exc: InvalidRequest) -> InvalidRequest:
    return InvalidRequest(FLAGS.get(exc.field, exc.field), exc.reason)


def _base(app, name: str | None):
    from sdstudio.training.lora_training import TrainingBase

    try:
        path = app.checkpoints.locate(name)
    except NotFound as exc:
        raise NotFound(f"--base: {exc}") from None
    return TrainingBase.from_file(path)


def run_create(args: argparse.Namespace) -> int:
    """Create the embedding and print its path."""
    from sdstudio.cli.common import open_app_from_args
    from sdstudio.training.textual_inversion import create_embedding

    app = open_app_from_args(args)
    base = _base(app, args.base)
    try:
        path = create_embedding(
            base.text_encoder, app.paths.folder("embedding"), args.name, args.vectors, args.init_text, args.overwrite
        )
    except InvalidRequest as exc:
        raise _flagged(exc) from None
    print(path)
    return 0


def build_job(args: argparse.Namespace, log_root: Path):
    """The EmbeddingTrainingJob the flags describe (as A1111's train_embedding fields)."""
    from sdstudio.training.textual_inversion import EmbeddingTrainingJob

    fields = {
        "embedding_name": args.name,
        "learn_rate": args.learn_rate,
        "batch_size": args.batch_size,
        "gradient_step": args.gradient_step,
        "steps": args.steps,
        "training_width": args.width,
        "training_height": args.height,
        "varsize": args.varsize,
        "repeats": args.repeats,
        "template_filename": args.template,
        "latent_sampling_method": args.latent_sampling,
        "shuffle_tags": args.shuffle_tags,
        "tag_drop_out": args.tag_drop_out,
        "use_weight": args.use_weight,
        "clip_grad_mode": args.clip_grad_mode,
        "clip_grad_value": args.clip_grad_value,
        "save_embedding_every": args.save_every,
        "create_image_every": args.image_every,
        "save_image_with_stored_embedding": not args.no_stored_embedding_image,
        "preview_from_txt2img": args.preview_prompt is not None,
        "preview_prompt": args.preview_prompt or "",
        "preview_negative_prompt": args.preview_negative_prompt,
        "preview_steps": args.preview_steps,
        "preview_sampler_name": args.preview_sampler,
        "preview_cfg_scale": args.preview_cfg_scale,
        "preview_seed": args.preview_seed,
        "preview_width": args.preview_width,
        "preview_height": args.preview_height,
        "save_safetensors": args.safetensors,
        "seed": args.seed,
    }
    return EmbeddingTrainingJob.from_fields(fields, Path(args.data), log_root)


def run_train(args: argparse.Namespace) -> int:
    """Train, printing progress on stderr and the embedding's path on stdout."""
    from sdstudio.cli.common import open_app_from_args
    from sdstudio.training.templates import templates_dir
    from sdstudio.training.textual_inversion import run_embedding_training

    app = open_app_from_args(args)
    log_root = Path(args.log_dir) if args.log_dir else app.paths.root / "textual_inversion"
    embeddings, templates = app.paths.folder("embedding"), templates_dir(app.paths.root)
    try:
        job = build_job(args, log_root)
        job.check(embeddings, templates)
        base = _base(app, args.base)

        def report(step: int, total: int, loss: float, text: str) -> None:
            if step % 10 == 0 or step == total:
                print(f"step {step}/{total} loss {loss:.5f}  {text}", file=sys.stderr)

        result = run_embedding_training(base, job, embeddings, templates, on_step=report)
    except InvalidRequest as exc:
        raise _flagged(exc) from None
    for path in result.saved + result.previews:
        print(f"wrote {path}", file=sys.stderr)
    print(f"trained to step {result.step} in {result.seconds:.0f}s; use it as {args.name} in a prompt", file=sys.stderr)
    print(result.path)
    return 0
