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


# CompVis scripts' --precision values -> sdstudio's: "autocast" asks for the device's default
# mixed precision, which is what "auto" gives (fp16 on CUDA, fp32 on the CPU)
COMPVIS_PRECISION = {"autocast": "auto", "full": "fp32"}


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
        type=lambda value: COMPVIS_PRECISION.get(value, value),
        choices=["auto", "autocast", "fp32", "full", "fp16", "bf16"],  # the CompVis names are mapped by `type`
        default=None,
        help="weights dtype (auto: fp16 on CUDA; bf16 for SD-sized models on CPUs with native bf16, else fp32;"
        " CompVis' autocast = auto, full = fp32)",
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
    """The side length the chosen checkpoint was trained at (models.detect.checkpoint_native_size), else 512."""
    from sdstudio.models.detect import DEFAULT_NATIVE_SIZE, checkpoint_native_size

    path = _chosen_checkpoint(args)
    return checkpoint_native_size(path) if path is not None else DEFAULT_NATIVE_SIZE


def latent_factor(args: argparse.Namespace) -> int:
    """How many pixels one latent cell spans in the chosen checkpoint (its LDM yaml), else SD's 8."""
    from sdstudio.models.detect import checkpoint_latent_factor

    path = _chosen_checkpoint(args)
    return checkpoint_latent_factor(path) if path is not None else 8


def _chosen_checkpoint(args: argparse.Namespace) -> Path | None:
    """The checkpoint file this run will use, looked up as generation does (name, title, hash); None if none.

    This runs before the request is validated, which must leave the data dir untouched when
    the request is refused: hashes computed by the lookup stay in memory (args._pending_hashes)
    until `save_pending_hashes` writes them once the request is accepted.
    """
    from sdstudio.config import DataPaths, load_settings, resolve_data_dir
    from sdstudio.errors import SdStudioError
    from sdstudio.models.registry import ModelRegistry

    if "_chosen_checkpoint" in vars(args):
        return args._chosen_checkpoint
    if getattr(args, "ckpt", None):
        path: Path | None = Path(args.ckpt).expanduser()
    else:
        paths = DataPaths(resolve_data_dir(getattr(args, "data_dir", None)))
        registry = ModelRegistry(paths, save_hashes=False)
        args._pending_hashes = registry.hash_cache
        try:
            wanted = getattr(args, "model", None) or load_settings(paths.config_file).settings.sd_model_checkpoint
            path = registry.default_checkpoint(wanted or "", with_hashes=False).path
        except (SdStudioError, OSError):  # no such checkpoint: validating the request says so
            path = None
    args._chosen_checkpoint = path
    return path


def save_pending_hashes(args: argparse.Namespace) -> None:
    """Cache the hashes the checkpoint lookup computed before validation (the request is accepted now)."""
    pending = getattr(args, "_pending_hashes", None)
    if pending is not None:
        pending.save()
