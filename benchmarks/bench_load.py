"""Claim: sdstudio loads a single-file checkpoint no slower and no larger than diffusers, and switching frees memory.

Writes a random-weight Stable Diffusion 1.5-sized checkpoint (UNet 860M, VAE, CLIP ViT-L; fp16,
LDM single-file layout, 2.1 GB, like v1-5-pruned-emaonly-fp16) into a temporary folder, then
loads it in fresh subprocesses, alternating, --repeats times each:

- sdstudio: `sdstudio.models.loader.load_checkpoint(path)` (fp32 on the CPU, as the app does);
- diffusers: `StableDiffusionPipeline.from_single_file(path, config=LOCAL_DIR, torch_dtype=fp32)`,
  LOCAL_DIR holding the same component configs (written in the diffusers layout), offline.

It reports the load call's wall time and the process's peak RSS (best run of each), and their
ratios. Then one more subprocess proves that switching checkpoints releases the previous one:
it loads checkpoint A through the app's checkpoint cache, then B (a hard link, so a different
checkpoint to the cache but no extra disk), then A again, printing the resident memory after each.

    .venv/bin/python benchmarks/bench_load.py [--repeats 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rss_mib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process image (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def write_checkpoint(folder: Path) -> tuple[Path, Path]:
    """The random SD1.5 checkpoint (+ yaml) and a diffusers-layout config folder for it."""
    import torch
    import yaml
    from bench_txt2img import SCHEDULER_CONFIG, build_sd15_components

    from sdstudio.models.saver import ldm_yaml_for, save_checkpoint
    from sdstudio.prompts.tokenizer import clip_tokenizer

    unet, vae, text_encoder = build_sd15_components(torch.float32)
    path = save_checkpoint(
        folder / "sd15-random.safetensors",
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        dtype=torch.float16,
        yaml_text=ldm_yaml_for(unet.config, vae.config, scale_factor=0.18215),
    )
    config = folder / "diffusers-config"
    for name, module in (("unet", unet), ("vae", vae)):
        module.save_config(config / name)
    text_encoder.config.save_pretrained(config / "text_encoder")
    clip_tokenizer("sd1").save_pretrained(config / "tokenizer")
    (config / "scheduler").mkdir(parents=True, exist_ok=True)
    (config / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "PNDMScheduler", **SCHEDULER_CONFIG, "skip_prk_steps": True})
    )
    (config / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
                "safety_checker": [None, None],
                "scheduler": ["diffusers", "PNDMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            }
        )
    )
    yaml.safe_load(path.with_suffix(".yaml").read_text())  # written and readable
    return Path(path), config


def child(mode: str, checkpoint: str, config: str) -> None:
    """Runs in a subprocess: one load (or the switching sequence); prints a JSON line."""
    import torch

    torch.set_grad_enabled(False)
    began = time.perf_counter()
    if mode == "sdstudio":
        from sdstudio.models.loader import load_checkpoint

        loaded = load_checkpoint(checkpoint)
        assert next(loaded.unet.parameters()).dtype == torch.float32
    elif mode == "diffusers":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_single_file(
            checkpoint,
            config=config,
            torch_dtype=torch.float32,
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
        assert next(pipe.unet.parameters()).dtype == torch.float32
    elif mode == "switch":
        from sdstudio.app import open_app

        data = Path(tempfile.mkdtemp(prefix="bench_load_data_"))
        folder = data / "models" / "Stable-diffusion"
        folder.mkdir(parents=True)
        os.link(checkpoint, folder / "a.safetensors")
        os.link(checkpoint, folder / "b.safetensors")
        app = open_app(data)
        steps = [("start", rss_mib())]
        for name in ("a.safetensors", "b.safetensors", "a.safetensors"):
            app.engine.model_source(name)
            steps.append((f"loaded {name}", rss_mib()))
        print(json.dumps({"steps": steps, "peak": peak_rss_mib()}))
        return
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "peak": peak_rss_mib()}))


def run_child(mode: str, checkpoint: Path, config: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(checkpoint), str(config)],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--keep", type=Path, default=None, help="write (or reuse) the checkpoint in DIR instead of a temp folder"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_load_"))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, config = folder / "sd15-random.safetensors", folder / "diffusers-config"
    if not (checkpoint.is_file() and (config / "model_index.json").is_file()):
        began = time.perf_counter()
        checkpoint, config = write_checkpoint(folder)
        print(
            f"wrote {checkpoint} ({checkpoint.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - began:.0f} s"
        )

    runs: dict[str, list[dict]] = {"sdstudio": [], "diffusers": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(run_child(mode, checkpoint, config))
    best = {
        mode: {"seconds": min(r["seconds"] for r in rs), "peak": min(r["peak"] for r in rs)}
        for mode, rs in runs.items()
    }

    print(f"\nSD1.5-sized random checkpoint, fp16 file -> fp32 on CPU, best of {args.repeats} fresh processes")
    print(f"{'':<10} {'load s':>8} {'peak RSS MiB':>13}")
    for mode, row in best.items():
        print(f"{mode:<10} {row['seconds']:>8.2f} {row['peak']:>13.0f}")
    print(
        f"{'ratio':<10} {best['sdstudio']['seconds'] / best['diffusers']['seconds']:>8.2f} "
        f"{best['sdstudio']['peak'] / best['diffusers']['peak']:>13.2f}   (sdstudio / diffusers; <= 1 is the target)"
    )

    switch = run_child("switch", checkpoint, config)
    print("\nswitching checkpoints through the app's cache (resident MiB after each step):")
    for label, value in switch["steps"]:
        print(f"  {label:<22} {value:>7.0f}")
    print(f"  {'peak':<22} {switch['peak']:>7.0f}")
    if args.keep is None:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()


if __name__ == "__main__":
    main()
