"""`sdstudio train-base`: training the bundled tiny model from scratch."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the `train-base` subcommand."""
    parser = subparsers.add_parser(
        "train-base",
        help="train the bundled tiny model from scratch on drawn scenes",
        description=(
            "Train the tiny Stable Diffusion model (VAE, CLIP text encoder, UNet) from scratch on procedurally "
            "drawn scenes ('a red circle on a blue background'). Writes OUT/train.log, sample grids in "
            "OUT/samples/, a resumable OUT/state.pt and the checkpoint OUT/sdstudio-tiny.safetensors with its "
            ".yaml (copy both into models/Stable-diffusion/ to use them)."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the state, log, samples and checkpoint")
    parser.add_argument("--steps", type=int, default=9500, help="UNet + text encoder steps (default 9500)")
    parser.add_argument("--vae-steps", type=int, default=800, help="VAE steps before the UNet (default 800)")
    parser.add_argument(
        "--decoder-steps", type=int, default=2250, help="decoder fine-tuning steps after the UNet (default 2250)"
    )
    parser.add_argument(
        "--refine-steps",
        type=int,
        default=1500,
        help="steps that continue the UNet at a low learning rate with low-frequency noise, last (default 1500)",
    )
    parser.add_argument(
        "--low-frequency-noise",
        type=float,
        default=0.1,
        help="strength of the offset/coarse-grid noise added in the refine steps (default 0.1)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="scenes per UNet step (default 32)")
    parser.add_argument(
        "--learning-rate", type=float, default=1e-3, help="peak UNet/text-encoder learning rate (default 1e-3)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, data and noise (default 0)")
    parser.add_argument(
        "--save-every", type=int, default=100, help="write the resumable state every N steps (default 100)"
    )
    parser.add_argument(
        "--sample-every",
        type=int,
        default=1000,
        help="sample grid and checkpoint every N UNet steps (default 1000; 0 = only at the end)",
    )
    parser.add_argument(
        "--size",
        choices=["tiny", "micro"],
        default="tiny",
        help="tiny: the bundled model's sizes (default); micro: a toy variant for smoke tests",
    )
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda, cuda:1 ..."
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=(
            "continue the run saved in --out "
            "(given more --decoder-steps or --refine-steps, a finished run continues too)"
        ),
    )
    parser.set_defaults(handler=run)


def training_config(args: argparse.Namespace):
    """The BaseTrainingConfig the parsed options ask for."""
    from sdstudio.training.base_training import BaseTrainingConfig
    from sdstudio.training.tiny_model import micro_ldm_config, tiny_ldm_config

    return BaseTrainingConfig(
        out_dir=args.out,
        unet_steps=args.steps,
        vae_steps=args.vae_steps,
        decoder_steps=args.decoder_steps,
        refine_steps=args.refine_steps,
        low_frequency_noise=args.low_frequency_noise,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        save_every=args.save_every,
        sample_every=args.sample_every,
        device=args.device,
        architecture=micro_ldm_config() if args.size == "micro" else tiny_ldm_config(),
    )


def run(args: argparse.Namespace) -> int:
    """Train, then say where the checkpoint is."""
    import torch

    from sdstudio.training.base_training import train_base

    if args.threads:
        torch.set_num_threads(args.threads)
    result = train_base(training_config(args), resume=args.resume, log=lambda line: print(line, flush=True))
    steps = ", ".join(f"{phase} {n}" for phase, n in result.steps.items())
    print(f"checkpoint: {result.checkpoint} ({steps} steps, {result.seconds / 60:.1f} min this run)")
    return 0
