"""Claim: the checkpoint merger merges two SD1.5-sized checkpoints in at most 1.5x one checkpoint's size of RAM.

Writes three random-weight checkpoints shaped exactly like Stable Diffusion 1.5 (UNet 860M, VAE,
CLIP ViT-L, the DDPM schedule buffers and EMA counters; fp16, LDM single-file layout, 2.1 GB each,
like v1-5-pruned-emaonly-fp16) into a temporary data dir, tensor by tensor (nothing is held whole),
then merges them in fresh subprocesses through the app's merger (names resolved by the registry,
inputs hashed for the merge recipe, the output hashed and listed):

- Weighted sum of A and B;
- Add difference A + M(B - C) (three inputs open at once).

For each it prints the merge's wall time and the subprocess's peak resident memory (VmHWM) against
one checkpoint's file size, with and without the memory the process holds once its imports are done.
Disk space is checked first (about 4 checkpoints' worth is needed); the folder is deleted at the end.

    .venv/bin/python benchmarks/bench_merge.py [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_RATIO = 1.5
SCHEDULE_BUFFERS = (
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "betas",
    "log_one_minus_alphas_cumprod",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_variance",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
)


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def sd15_specs():
    """The names, dtypes and shapes of an SD1.5 fp16 checkpoint, from components built without weights."""
    import torch
    from bench_txt2img import build_sd15_components

    from sdstudio.models.saver import ldm_state_dict
    from sdstudio.models.tensor_stream import TensorSpec

    with torch.device("meta"):
        unet, vae, text_encoder = build_sd15_components(torch.float16)
    layout = ldm_state_dict(unet=unet, vae=vae, text_encoder=text_encoder)
    specs = [TensorSpec(name, value.dtype, tuple(value.shape)) for name, value in layout.items()]
    specs.append(TensorSpec("cond_stage_model.transformer.text_model.embeddings.position_ids", torch.int64, (1, 77)))
    specs += [TensorSpec(name, torch.float32, (1000,)) for name in SCHEDULE_BUFFERS]
    specs += [TensorSpec("model_ema.decay", torch.float32, ()), TensorSpec("model_ema.num_updates", torch.int32, ())]
    return specs


def write_random_checkpoint(path: Path, specs, seed: int) -> int:
    """A checkpoint of random tensors, written one tensor at a time; returns its size."""
    import torch

    from sdstudio.models.tensor_stream import write_safetensors

    generator = torch.Generator().manual_seed(seed)

    def random_tensor(spec):
        if spec.dtype.is_floating_point:
            return torch.randn(spec.shape, generator=generator, dtype=torch.float32).to(spec.dtype) * 0.02
        return torch.arange(max(1, spec.nbytes // spec.dtype.itemsize), dtype=spec.dtype).reshape(spec.shape)

    return write_safetensors(path, specs, random_tensor, {"format": "pt"})


def merge_child(data_dir: str, method: str) -> None:
    """Run one merge in this process and print its figures as JSON."""
    from sdstudio.config import DataPaths
    from sdstudio.models.merge import CheckpointMerger, MergeRequest
    from sdstudio.models.registry import ModelRegistry

    baseline = peak_rss_mib()
    merger = CheckpointMerger(ModelRegistry(DataPaths(Path(data_dir))))
    request = MergeRequest(
        primary_model_name="a",
        secondary_model_name="b",
        tertiary_model_name="c" if method == "Add difference" else "",
        interp_method=method,
        multiplier=0.5,
        custom_name=method.replace(" ", "-"),
    )
    started = time.perf_counter()
    result = merger.merge(request)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "baseline_mib": baseline,
                "peak_mib": peak_rss_mib(),
                "seconds": seconds,
                "output": str(result.path),
                "output_bytes": result.path.stat().st_size,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help="where to put the temporary data dir (default: the system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--merge-child", nargs=2, metavar=("DATA_DIR", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.merge_child:
        merge_child(*args.merge_child)
        return 0

    specs = sd15_specs()
    checkpoint_bytes = sum(spec.nbytes for spec in specs)
    root = Path(tempfile.mkdtemp(prefix="bench-merge-", dir=args.dir))
    needed = 4 * checkpoint_bytes + 2**30
    free = shutil.disk_usage(root).free
    if free < needed:
        shutil.rmtree(root)
        print(f"needs {needed / 2**30:.1f} GiB free in {root.parent}, has {free / 2**30:.1f} GiB", file=sys.stderr)
        return 1
    try:
        folder = root / "models" / "Stable-diffusion"
        folder.mkdir(parents=True)
        started = time.perf_counter()
        sizes = [
            write_random_checkpoint(folder / f"{name}.safetensors", specs, seed) for seed, name in enumerate("abc")
        ]
        seconds = time.perf_counter() - started
        print(f"wrote 3 SD1.5-shaped fp16 checkpoints of {sizes[0] / 2**30:.2f} GiB in {seconds:.0f} s")
        size_mib = sizes[0] / 2**20
        for method in ("Weighted sum", "Add difference"):
            command = [sys.executable, __file__, "--merge-child", str(root), method]
            answer = subprocess.run(command, check=True, capture_output=True, text=True)
            figures = json.loads(answer.stdout.strip().splitlines()[-1])
            peak, baseline = figures["peak_mib"], figures["baseline_mib"]
            print(
                f"{method}: {figures['seconds']:.0f} s; peak RSS {peak:.0f} MiB vs one checkpoint {size_mib:.0f} MiB "
                f"= {peak / size_mib:.2f}x (target <= {TARGET_RATIO}x); above the {baseline:.0f} MiB of imports: "
                f"{peak - baseline:.0f} MiB = {(peak - baseline) / size_mib:.2f}x"
            )
            Path(figures["output"]).unlink()
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
