"""`sdstudio train-lora`: train a LoRA on a folder of captioned images (kohya-style options)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdstudio.errors import InvalidRequest, NotFound


def register(subparsers) -> None:
    """Add the `train-lora` subcommand."""
    parser = subparsers.add_parser(
        "train-lora",
        help="train a LoRA on a folder of images with .txt captions",
        description=(
            "Train a LoRA on DIR (images with same-named .txt captions; kohya's N_concept subfolders repeat "
            "their images N times) over the base CHECKPOINT, and save models/Lora/NAME.safetensors in kohya "
            "format with ss_* metadata, usable as <lora:NAME:1>."
        ),
    )
    parser.add_argument("--data", required=True, help="folder of training images and captions")
    parser.add_argument(
        "--base",
        required=True,
        help="base checkpoint: a file, or a name, title or hash as `sdstudio models list` shows it",
    )
    parser.add_argument("--output", required=True, help="name of the LoRA file to write (without extension)")
    parser.add_argument(
        "--resolution", type=int, default=512, help="training image size in pixels (square; default 512)"
    )
    parser.add_argument("--max-train-steps", type=int, default=1600, help="optimizer steps (default 1600)")
    parser.add_argument("--train-batch-size", type=int, default=1, help="images per step (default 1)")
    parser.add_argument(
        "--gradient-accumulation-steps", type=int, default=1, help="batches per optimizer step (default 1)"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument(
        "--text-encoder-lr",
        type=float,
        default=None,
        help="learning rate of the text encoder LoRA (default: --learning-rate)",
    )
    parser.add_argument(
        "--rank", "--network-dim", dest="rank", type=int, default=4, help="LoRA rank (kohya network_dim; default 4)"
    )
    parser.add_argument(
        "--network-alpha", type=float, default=1.0, help="LoRA alpha; the scale is alpha/rank (default 1)"
    )
    parser.add_argument(
        "--conv-rank",
        type=int,
        default=0,
        help="also train ResNet 3x3 convolutions (LoCon) with this rank (default 0: off)",
    )
    parser.add_argument("--train-text-encoder", action="store_true", help="also train a LoRA on the text encoder")
    parser.add_argument(
        "--repeats", type=int, default=1, help="times each image is shown per epoch (N_concept folders set their own)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--save-every",
        type=int,
        default=0,
        help="also save NAME-stepNNNNNNNN.safetensors and the resumable state every N steps",
    )
    parser.add_argument(
        "--sample-every",
        type=int,
        default=0,
        help="render the sample prompts every N steps (they are always rendered at the end)",
    )
    parser.add_argument("--sample-prompt", action="append", default=[], help="prompt for sample images (repeatable)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the state saved by an earlier run with the same --output"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def load_training_base(path: Path):
    """The base checkpoint through the model manager's loader, as a TrainingBase."""
    from sdstudio.training.lora_training import TrainingBase

    return TrainingBase.from_file(path)


def run(args: argparse.Namespace) -> int:
    """Train and report where the LoRA was saved."""
    from sdstudio.cli.common import open_app_from_args
    from sdstudio.training.lora_dataset import scan_training_folder
    from sdstudio.training.lora_training import LoraTrainingConfig, train_lora

    app = open_app_from_args(args)
    config = LoraTrainingConfig(
        output_name=args.output,
        resolution=args.resolution,
        max_train_steps=args.max_train_steps,
        train_batch_size=args.train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        text_encoder_lr=args.text_encoder_lr,
        rank=args.rank,
        network_alpha=args.network_alpha,
        conv_rank=args.conv_rank,
        conv_alpha=args.network_alpha,
        train_text_encoder=args.train_text_encoder,
        seed=args.seed,
        save_every=args.save_every,
        sample_every=args.sample_every,
        sample_prompts=list(args.sample_prompt),
    )
    config.check()
    images = scan_training_folder(args.data, args.repeats)
    state_dir = app.paths.cache_dir / "train-lora" / args.output
    if args.resume and not (state_dir / "state.json").is_file():
        raise InvalidRequest(
            "resume",
            f"no saved state for {args.output!r} in {state_dir}; run without --resume (use --save-every to keep state)",
        )
    try:
        base_entry = app.models.find_checkpoint(args.base)
    except NotFound as exc:
        raise NotFound(f"base: {exc}") from None
    base = load_training_base(base_entry.path)
    result = train_lora(
        base,
        images,
        config,
        app.paths.folder("lora"),
        state_dir=state_dir,
        samples_dir=app.paths.outputs / "train-lora" / args.output,
        resume=args.resume,
        progress_bar=not args.no_progress,
    )
    print(f"saved {result.path} ({result.steps} steps, final loss {result.losses[-1]:.4f}, {result.seconds:.0f}s)")
    for path in result.sample_paths:
        print(f"sample {path}")
    print(f"use it with <lora:{args.output}:1> in a prompt")
    return 0
