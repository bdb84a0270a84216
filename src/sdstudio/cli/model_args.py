"""`--ckpt PATH` / `--model NAME` for the generation commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdstudio.errors import InvalidRequest


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --ckpt (CompVis) and --model (name, title or hash)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ckpt", metavar="PATH", default=None, help="checkpoint file to use")
    group.add_argument(
        "--model", metavar="NAME", default=None, help="checkpoint by name, title or hash (see `sdstudio models list`)"
    )
    add_load_arguments(parser)


# command-line flag (argparse dest) -> the Settings field it overrides for this run (not saved)
LOAD_FLAGS = {
    "vae": "sd_vae",
    "precision": "precision",
    "no_half_vae": "no_half_vae",
    "device": "device",
    "vae_tiling": "vae_tiling",
    "attention_slicing": "attention_slicing",
    "cpu_offload": "cpu_offload",
}


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """Precision, VAE and memory flags (A1111's command-line flags); they override the saved settings for this run."""
    group = parser.add_argument_group("model loading")
    group.add_argument(
        "--vae",
        metavar="NAME",
        default=None,
        help="VAE from models/VAE, or 'Automatic' (NAME.vae.* beside the checkpoint) or 'None' (the checkpoint's own)",
    )
    group.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default=None,
        help="weights dtype (auto: fp16 on CUDA, fp32 on the CPU)",
    )
    group.add_argument(
        "--no-half-vae", action="store_true", default=None, help="keep the VAE in fp32 when the rest is fp16/bf16"
    )
    group.add_argument("--device", default=None, help="torch device: auto, cpu, cuda, cuda:1 ...")
    group.add_argument(
        "--vae-tiling", action="store_true", default=None, help="decode/encode large images in tiles (less memory)"
    )
    group.add_argument(
        "--attention-slicing",
        action="store_true",
        default=None,
        help="compute attention in slices (less memory, slower)",
    )
    group.add_argument(
        "--cpu-offload",
        action="store_true",
        default=None,
        help="keep the model in CPU memory and move one part at a time to the GPU (small GPUs)",
    )


def load_options(args: argparse.Namespace) -> dict[str, object]:
    """The settings the loading flags given on the command line overlay for this run (never saved)."""
    return {field: getattr(args, flag) for flag, field in LOAD_FLAGS.items() if getattr(args, flag, None) is not None}


def checkpoint_choice(args: argparse.Namespace) -> str | None:
    """The checkpoint asked for on the command line (a path or a registry name), or None."""
    if getattr(args, "ckpt", None):
        path = Path(args.ckpt).expanduser()
        if not path.is_file():
            raise InvalidRequest("ckpt", f"no such file: {path}")
        return str(path.resolve())
    return getattr(args, "model", None) or None


def native_size(args: argparse.Namespace) -> int:
    """The side length the chosen checkpoint was trained at (models.detect.checkpoint_native_size), else 512.

    This runs before the request is validated, which must leave the data dir untouched when
    the request is refused: hashes computed by the lookup stay in memory (args._pending_hashes)
    until `save_pending_hashes` writes them once the request is accepted.
    """
    from sdstudio.config import DataPaths, load_settings, resolve_data_dir
    from sdstudio.errors import SdStudioError
    from sdstudio.models.detect import DEFAULT_NATIVE_SIZE, checkpoint_native_size
    from sdstudio.models.registry import ModelRegistry

    cached = getattr(args, "_native_size", None)
    if cached:
        return cached
    if getattr(args, "ckpt", None):
        size = checkpoint_native_size(Path(args.ckpt).expanduser())
    else:
        paths = DataPaths(resolve_data_dir(getattr(args, "data_dir", None)))
        registry = ModelRegistry(paths, save_hashes=False)
        args._pending_hashes = registry.hash_cache
        try:
            wanted = getattr(args, "model", None) or load_settings(paths.config_file).settings.sd_model_checkpoint
            size = registry.native_size(wanted or "")
        except (SdStudioError, OSError):  # no such checkpoint: validating the request says so
            size = DEFAULT_NATIVE_SIZE
    args._native_size = size
    return size


def save_pending_hashes(args: argparse.Namespace) -> None:
    """Cache the hashes the checkpoint lookup computed before validation (the request is accepted now)."""
    pending = getattr(args, "_pending_hashes", None)
    if pending is not None:
        pending.save()
