"""Claim: the bundled tiny model follows prompts, also for combinations it never saw.

Generates every held-out (colour, shape, background) combination of the scene generator and a
sample of the seen ones through sdstudio's engine (GenerationService via `open_app`; 20 steps,
Euler a, CFG 7, several seeds), reads each image back with `sdstudio.training.scene_metrics`
(colours by pixel statistics, shape by a small CNN trained on the generator's images; its
accuracy on rendered scenes is printed first) and prints object-colour, background-colour and
shape accuracy, seen vs held-out, with the time per image. The same images are then timed
through plain `diffusers.StableDiffusionPipeline` (same modules, same sampler) for the ratio.

    .venv/bin/python benchmarks/eval_tiny.py                       # the bundled model
    .venv/bin/python benchmarks/eval_tiny.py --checkpoint runs/base/sdstudio-tiny.safetensors --seeds 2
    .venv/bin/python benchmarks/eval_tiny.py --grid eval.png       # also save every image as a grid

Targets (issue 7): held-out object colour >= 90%, background >= 95%, shape >= 80%; seen >= held-out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "src" / "sdstudio" / "assets" / "tiny" / "sdstudio-tiny.safetensors"


def generate_sdstudio(app, prompts: list[str], seeds: int, steps: int, cfg: float, sampler: str):
    """Images for each prompt at seeds 0..seeds-1 (one batch per prompt) and the seconds spent."""
    from sdstudio.engine.request import Txt2ImgRequest

    images, began = [], time.perf_counter()
    for prompt in prompts:
        request = Txt2ImgRequest(
            prompt=prompt,
            seed=0,
            batch_size=seeds,
            steps=steps,
            cfg_scale=cfg,
            sampler_name=sampler,
            width=64,
            height=64,
            do_not_save_samples=True,
            do_not_save_grid=True,
        )
        result = app.engine.txt2img(request)
        images += [np.asarray(image.convert("RGB")) for image in result.images[result.index_of_first_image :]]
    return images, time.perf_counter() - began


def time_plain_diffusers(checkpoint: Path, prompts: list[str], seeds: int, steps: int, cfg: float) -> float:
    """Seconds for the same prompts and batches through diffusers' own pipeline (Euler a)."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from sdstudio.models.loader import load_checkpoint
    from sdstudio.prompts.tokenizer import clip_tokenizer

    loaded = load_checkpoint(checkpoint)
    pipe = StableDiffusionPipeline(
        vae=loaded.vae,
        text_encoder=loaded.text_encoder,
        tokenizer=clip_tokenizer("sd1"),
        unet=loaded.unet,
        scheduler=EulerAncestralDiscreteScheduler.from_config(loaded.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.vae.config.scaling_factor = loaded.vae_scaling_factor
    pipe.set_progress_bar_config(disable=True)
    began = time.perf_counter()
    for prompt in prompts:
        generator = [torch.Generator().manual_seed(seed) for seed in range(seeds)]
        pipe(
            prompt,
            height=64,
            width=64,
            num_inference_steps=steps,
            guidance_scale=cfg,
            num_images_per_prompt=seeds,
            generator=generator,
        )
    return time.perf_counter() - began


def score(readings, combos) -> dict[str, float]:
    """Accuracy of object colour, background colour, shape, and all three at once."""
    hits = {"object": [], "background": [], "shape": [], "all": []}
    for reading, (colour, shape, background) in zip(readings, combos):
        hits["object"].append(reading.colour == colour)
        hits["background"].append(reading.background == background)
        hits["shape"].append(reading.shape == shape)
        hits["all"].append(reading.colour == colour and reading.background == background and reading.shape == shape)
    return {key: float(np.mean(values)) for key, values in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED)
    parser.add_argument("--seeds", type=int, default=4, help="images per combination (default 4)")
    parser.add_argument("--seen", type=int, default=30, help="seen combinations sampled (default 30)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--grid", type=Path, default=None, help="save all images as one grid (held-out rows first)")
    parser.add_argument("--no-diffusers", action="store_true", help="skip the plain-diffusers timing")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()

    import torch

    from sdstudio.app import open_app
    from sdstudio.training import scene_metrics, scenes

    checkpoint = args.checkpoint.resolve()
    if not checkpoint.is_file():
        sys.exit(f"no checkpoint at {checkpoint}")
    began = time.perf_counter()
    classifier = scene_metrics.ShapeClassifier()
    truth = scenes.scene_batch(4321, 0, 600, "all")
    truth_readings = scene_metrics.read_scenes([s.render() for s in truth], classifier)
    truth_score = score(truth_readings, [s.combo for s in truth])
    print(
        f"scorer on 600 rendered scenes: object {truth_score['object']:.1%}, "
        f"background {truth_score['background']:.1%}, "
        f"shape {truth_score['shape']:.1%} (trained in {time.perf_counter() - began:.1f} s)"
    )

    rng = np.random.default_rng(0)
    seen = [
        scenes.TRAIN_COMBOS[i]
        for i in sorted(
            rng.choice(len(scenes.TRAIN_COMBOS), size=min(args.seen, len(scenes.TRAIN_COMBOS)), replace=False)
        )
    ]
    held_out = list(scenes.HELD_OUT_LIST)
    app = open_app(tempfile.mkdtemp(prefix="eval_tiny_"))
    app.engine.select_model(ckpt=str(checkpoint))
    generate_sdstudio(app, ["warm-up"], 1, 2, args.cfg, args.sampler)

    rows, all_images, timings = {}, [], {}
    for split, combos in (("held-out", held_out), ("seen", seen)):
        prompts = [scenes.caption_for(*combo) for combo in combos]
        images, seconds = generate_sdstudio(app, prompts, args.seeds, args.steps, args.cfg, args.sampler)
        expected = [combo for combo in combos for _ in range(args.seeds)]
        readings = scene_metrics.read_scenes(images, classifier)
        # Images come prompt by prompt, seeds 0..n-1 within each: every n-th one shares a seed.
        by_seed = [score(readings[seed :: args.seeds], expected[seed :: args.seeds]) for seed in range(args.seeds)]
        by_background = {
            name: float(np.mean([r.background == name for r, c in zip(readings, expected) if c[2] == name]))
            for name in scenes.COLOUR_NAMES
            if any(c[2] == name for c in expected)
        }
        rows[split] = score(readings, expected) | {
            "images": len(images),
            "by_seed": by_seed,
            "background_by_colour": by_background,
        }
        timings[split] = seconds
        all_images += images
    per_image = sum(timings.values()) / sum(row["images"] for row in rows.values())

    print(
        f"\n{checkpoint.name}: {args.steps} steps {args.sampler}, CFG {args.cfg:g}, "
        f"{args.seeds} seeds per combination, 64x64, {torch.get_num_threads()} threads"
    )
    print(
        f"{'split':<9} {'combos':>6} {'images':>6} {'object colour':>13} "
        f"{'background':>10} {'shape':>6} {'all three':>9}"
    )
    for split, combos in (("held-out", held_out), ("seen", seen)):
        row = rows[split]
        print(
            f"{split:<9} {len(combos):>6} {row['images']:>6} {row['object']:>13.1%} "
            f"{row['background']:>10.1%} {row['shape']:>6.1%} {row['all']:>9.1%}"
        )
    for split in rows:
        print(
            f"{split} by seed (object / background / shape): "
            + ", ".join(
                f"{seed}: {r['object']:.0%}/{r['background']:.0%}/{r['shape']:.0%}"
                for seed, r in enumerate(rows[split]["by_seed"])
            )
        )
        print(
            f"{split} background right, by the colour asked for: "
            + ", ".join(f"{name} {value:.0%}" for name, value in rows[split]["background_by_colour"].items())
        )
    targets = (
        rows["held-out"]["object"] >= 0.9
        and rows["held-out"]["background"] >= 0.95
        and rows["held-out"]["shape"] >= 0.8
    )
    print(f"held-out targets (object >= 90%, background >= 95%, shape >= 80%): {'met' if targets else 'NOT met'}")

    figures = {"checkpoint": str(checkpoint), "rows": rows, "sdstudio_s_per_image": per_image, "targets_met": targets}
    print(f"\ntime per image (batch of {args.seeds}, whole request): sdstudio {per_image * 1000:.0f} ms", end="")
    if not args.no_diffusers:
        prompts = [scenes.caption_for(*combo) for combo in held_out]
        time_plain_diffusers(checkpoint, prompts[:1], args.seeds, args.steps, args.cfg)  # warm-up
        sdstudio_seconds = generate_sdstudio(app, prompts, args.seeds, args.steps, args.cfg, args.sampler)[1]
        diffusers_seconds = time_plain_diffusers(checkpoint, prompts, args.seeds, args.steps, args.cfg)
        count = len(prompts) * args.seeds
        figures |= {
            "sdstudio_s_per_image_same_run": sdstudio_seconds / count,
            "diffusers_s_per_image": diffusers_seconds / count,
        }
        print(
            f"; same held-out prompts back to back: sdstudio {sdstudio_seconds / count * 1000:.0f} ms, "
            f"plain diffusers {diffusers_seconds / count * 1000:.0f} ms, "
            f"ratio {sdstudio_seconds / diffusers_seconds:.2f}"
        )
    else:
        print()
    if args.grid:
        from PIL import Image

        columns = args.seeds * 6
        grid = Image.new("RGB", (64 * columns, 64 * -(-len(all_images) // columns)))
        for index, image in enumerate(all_images):
            grid.paste(Image.fromarray(image), (64 * (index % columns), 64 * (index // columns)))
        grid.save(args.grid)
        print(f"grid: {args.grid}")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
