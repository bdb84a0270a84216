"""Claim: sdstudio's txt2img costs no more than plain diffusers (time per step and peak memory).

Builds a random-weight model of Stable Diffusion 1.5's exact sizes (UNet 860M, VAE,
CLIP ViT-L text encoder; same seed, so identical weights on both sides) and generates one
512x512 image with the same sampler (Euler), steps and CFG scale, once through
`diffusers.StableDiffusionPipeline` and once through sdstudio's `GenerationService`.
Each run is its own subprocess so peak RSS is measured cleanly; fp32 and bf16 on CPU.

    .venv/bin/python benchmarks/bench_txt2img.py --steps 4
    .venv/bin/python benchmarks/bench_txt2img.py --steps 2 --dtypes fp32 --size 256
    .venv/bin/python benchmarks/bench_txt2img.py --mode defaults        # whole processes, defaults

`--mode defaults` compares whole processes with each side's defaults: the same random
SD1.5-sized weights saved once as diffusers' folder (its `from_pretrained` defaults, fp32)
and once as a single-file fp16 checkpoint in an sdstudio data dir; a 20-step 512x512 image,
Euler a, CFG 7, seed 1, each its own process: `StableDiffusionPipeline` vs `sdstudio txt2img`
with no precision flag (auto: bf16 on CPUs with native bf16), then sdstudio with
`--precision fp32` (the reference image), token merging 0.5, the step cache (interval 3) and
an 8-step LCM schedule.
It prints wall time and peak RSS of each process, its ratio to diffusers', and the PSNR of
each image against sdstudio's fp32 image.

Prints a table: seconds per step (sampling loop only, measured from the first to the last
step callback) and total seconds, peak RSS in MiB, and sdstudio/diffusers ratios. Runs are
interleaved and repeated (--repeats), best of each reported, so a busy CPU skews both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "timestep_spacing": "linspace",
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def build_sd15_components(dtype):
    """Random SD1.5-sized UNet, VAE and CLIP text encoder (weights from seed 0)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
        )
    )
    return [m.to(dtype).eval().requires_grad_(False) for m in (unet, vae, text_encoder)]


def sd15_pipeline(unet, vae, text_encoder):
    """diffusers' StableDiffusionPipeline over the components (Euler, no safety checker)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from sdstudio.prompts.tokenizer import clip_tokenizer

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer("sd1"),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def run_diffusers(args, dtype) -> dict:
    import torch

    pipe = sd15_pipeline(*build_sd15_components(dtype))
    pipe.set_progress_bar_config(disable=True)
    stamps: list[float] = []

    def on_step(pipeline, step, timestep, kwargs):
        stamps.append(time.perf_counter())
        return kwargs

    start = time.perf_counter()
    with torch.no_grad():
        pipe(
            args.prompt,
            negative_prompt="",
            num_inference_steps=args.steps,
            guidance_scale=7.0,
            width=args.size,
            height=args.size,
            generator=torch.Generator("cpu").manual_seed(1),
            callback_on_step_end=on_step,
        )
    return {"total_s": time.perf_counter() - start, "stamps": stamps, "loop_start": start}


def run_sdstudio(args, dtype) -> dict:
    from sdstudio.config import DataPaths, Settings
    from sdstudio.engine.conditioning import PlainClipEncoder
    from sdstudio.engine.job_context import GenerationModel
    from sdstudio.engine.request import Txt2ImgRequest
    from sdstudio.engine.service import GenerationControl, GenerationService
    from sdstudio.prompts.tokenizer import clip_tokenizer

    unet, vae, text_encoder = build_sd15_components(dtype)
    model = GenerationModel(
        unet=unet,
        vae=vae,
        encoder=PlainClipEncoder(text_encoder, clip_tokenizer("sd1")),
        scheduler_config=SCHEDULER_CONFIG,
        name="random-sd15",
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = DataPaths(Path(tmp)).ensure()
        service = GenerationService(Settings(samples_save=False), paths, lambda name: model)
        stamps: list[float] = []
        control = GenerationControl(on_progress=lambda e: stamps.append(time.perf_counter()), preview_every=0)
        request = Txt2ImgRequest(
            prompt=args.prompt,
            steps=args.steps,
            cfg_scale=7.0,
            width=args.size,
            height=args.size,
            seed=1,
            sampler_name="Euler",
            scheduler="Uniform",
            do_not_save_samples=True,
        )
        start = time.perf_counter()
        service.txt2img(request, control)
    return {"total_s": time.perf_counter() - start, "stamps": stamps, "loop_start": start}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    result = (run_sdstudio if args.impl == "sdstudio" else run_diffusers)(args, dtype)
    stamps = result.pop("stamps")
    # Step time from step callbacks: (last - first) / (n - 1); excludes text encoding and VAE decode.
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"s_per_step": per_step, "total_s": result["total_s"], "peak_rss_mib": peak_mib, "steps_seen": len(stamps)}
        )
    )


DIFFUSERS_DEFAULTS_SCRIPT = """
import sys, torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline
folder, prompt, steps, size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
image = pipe(prompt, num_inference_steps=steps, guidance_scale=7.0, width=size, height=size,
             generator=torch.Generator("cpu").manual_seed(1)).images[0]
image.save(out)
"""


def write_defaults_models(root: Path) -> tuple[Path, Path]:
    """The random SD1.5-sized weights as a diffusers folder and as an sdstudio data dir (fp16 single file)."""
    import torch

    from sdstudio.models.saver import ldm_yaml_for, save_checkpoint

    unet, vae, text_encoder = build_sd15_components(torch.float32)
    folder = root / "diffusers-sd15"
    sd15_pipeline(unet, vae, text_encoder).save_pretrained(folder)
    data = root / "data"
    save_checkpoint(
        data / "models" / "Stable-diffusion" / "random-sd15.safetensors",
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        yaml_text=ldm_yaml_for(unet.config, vae.config, scale_factor=0.18215),
        dtype=torch.float16,
    )
    return folder, data


def run_measured(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process; a failure stops the benchmark."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-3000:] if process.stderr else ''}")
    return elapsed, usage.ru_maxrss / 1024


def psnr(image: Path, reference: Path) -> float:
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(image).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(reference).convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def defaults_mode(args) -> None:
    """Whole processes with each side's defaults, and sdstudio's few-call switches (see the module docstring)."""
    import json as _json

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Written by a child: a process's peak RSS survives exec into the processes it starts (Linux keeps
        # maxrss across execve), so this one must never hold the weights.
        subprocess.run([sys.executable, __file__, "--write-models", str(root)], check=True, capture_output=True)
        folder, data = root / "diffusers-sd15", root / "data"
        sdstudio = [sys.executable, "-m", "sdstudio.cli.main", "--data-dir", str(data), "txt2img", "--prompt"]
        common = [args.prompt, "--width", str(args.size), "--height", str(args.size), "--seed", "1", "--no-progress"]
        variants = {}  # data dirs over the same model folder whose config.json turns one switch on
        for name, option in (("tome", {"token_merging_ratio": 0.5}), ("cache", {"step_cache_interval": 3})):
            variants[name] = root / f"data-{name}"
            (variants[name] / "models").mkdir(parents=True)
            (variants[name] / "models" / "Stable-diffusion").symlink_to(data / "models" / "Stable-diffusion")
            (variants[name] / "config.json").write_text(_json.dumps(option))
        runs: dict[str, list[str] | str | None] = {
            "diffusers defaults (fp32)": None,
            "sdstudio defaults": [],
            "sdstudio --precision fp32": ["--precision", "fp32"],
            "sdstudio defaults, ToMe 0.5": "tome",
            "sdstudio defaults, step cache 3": "cache",
            "sdstudio defaults, LCM 8 steps": ["--sampler", "LCM", "--steps", "8", "--cfg-scale", "1.5"],
        }
        rows: dict[str, list[tuple[float, float, Path]]] = {name: [] for name in runs}
        for _attempt in range(args.repeats):  # interleaved: a busy moment hits every row alike
            for name, extra in runs.items():
                out = root / f"out-{len(rows[name])}-{abs(hash(name))}"
                if extra is None:
                    image = out.with_suffix(".png")
                    command = [sys.executable, "-c", DIFFUSERS_DEFAULTS_SCRIPT, str(folder), args.prompt, "20"]
                    command += [str(args.size), str(image)]
                else:
                    base = list(sdstudio)
                    if isinstance(extra, str):
                        base[base.index(str(data))] = str(variants[extra])
                        extra = []
                    command = [*base, *common, "--sampler", "Euler a", "--steps", "20", "--cfg-scale", "7"]
                    command += [*extra, "--outdir", str(out)]
                seconds, peak = run_measured(command)
                image = image if extra is None else next(out.rglob("*.png"))
                rows[name].append((seconds, peak, image))
        reference = rows["sdstudio --precision fp32"][0][2]
        diffusers_s = min(r[0] for r in rows["diffusers defaults (fp32)"])
        print(f"whole process, {args.size}x{args.size}, Euler a, CFG 7, seed 1, random SD1.5-sized weights, CPU,")
        print(f"best of {args.repeats}; PSNR against sdstudio's fp32 image")
        print(f"{'run':34} {'wall s':>8} {'x diffusers':>12} {'speed-up':>9} {'peak RSS MiB':>13} {'PSNR dB':>8}")
        for name, found in rows.items():
            seconds = min(r[0] for r in found)
            peak = min(r[1] for r in found)
            quality = psnr(found[0][2], reference)
            print(
                f"{name:34} {seconds:8.1f} {seconds / diffusers_s:11.2f}x {diffusers_s / seconds:8.2f}x "
                f"{peak:13.0f} {quality:8.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["steps", "defaults"], default="steps")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per implementation (best is reported)")
    parser.add_argument("--impl", choices=["sdstudio", "diffusers"], help=argparse.SUPPRESS)
    parser.add_argument("--write-models", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_models:
        write_defaults_models(Path(args.write_models))
        return
    if args.impl:
        child(args)
        return
    if args.mode == "defaults":
        defaults_mode(args)
        return
    rows = []
    for dtype in args.dtypes:
        runs: dict[str, list[dict]] = {"diffusers": [], "sdstudio": []}
        # Interleaved repeats, best of each: the CPU may be shared, and drift hits both sides alike.
        for _ in range(args.repeats):
            for impl in ("diffusers", "sdstudio"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--impl",
                    impl,
                    "--dtype",
                    dtype,
                    "--steps",
                    str(args.steps),
                    "--size",
                    str(args.size),
                    "--prompt",
                    args.prompt,
                    "--threads",
                    str(args.threads),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                if out.returncode != 0:
                    sys.exit(f"{impl} {dtype} failed:\n{out.stderr[-3000:]}")
                runs[impl].append(json.loads(out.stdout.strip().splitlines()[-1]))
        best = {impl: {key: min(r[key] for r in found) for key in found[0]} for impl, found in runs.items()}
        rows.append((dtype, best["diffusers"], best["sdstudio"]))
    print(
        f"txt2img {args.size}x{args.size}, {args.steps} steps, Euler, CFG 7, random SD1.5-sized weights, "
        f"CPU, best of {args.repeats}"
    )
    print(f"{'dtype':6} {'impl':10} {'s/step':>8} {'total s':>8} {'peak RSS MiB':>13}")
    for dtype, base, ours in rows:
        for name, m in (("diffusers", base), ("sdstudio", ours)):
            print(f"{dtype:6} {name:10} {m['s_per_step']:8.2f} {m['total_s']:8.1f} {m['peak_rss_mib']:13.0f}")
        print(
            f"{dtype:6} {'ratio':10} {ours['s_per_step'] / base['s_per_step']:8.2f}x "
            f"{ours['total_s'] / base['total_s']:7.2f}x {ours['peak_rss_mib'] / base['peak_rss_mib']:12.2f}x"
        )


if __name__ == "__main__":
    main()
