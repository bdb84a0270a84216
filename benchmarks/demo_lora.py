"""Demo: teach the bundled tiny model a shape it cannot draw (a star) with a LoRA.

The bundled model knows circles, squares and triangles (sdstudio.training.scenes). This
script renders ~20 images of five-pointed stars in the same style and captions
("a large red star at the top on a blue background"), trains a LoRA with
`sdstudio.training.lora_training.train_lora` (the code behind `sdstudio train-lora`),
then generates images through the real engine (GenerationService + the LoRA batch hook)
with and without `<lora:NAME:1>` and scores them with a shape classifier:

    star  <=>  scene_metrics' shape CNN (the one eval_tiny.py uses) says "star", trained
               with a fourth class on masks of rendered stars, half of them blurred

The classifier is first checked on rendered ground truth and its accuracy printed.
Target (issue 10): star in >= 70% of images with the tag, ~0% without, in < 15 min on 2 cores.

    .venv/bin/python benchmarks/demo_lora.py [--base PATH] [--steps 1500] [--images 20] [--eval 20]
    .venv/bin/python benchmarks/demo_lora.py --smoke      # plumbing only: random micro model, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "src" / "sdstudio" / "assets" / "tiny" / "sdstudio-tiny.safetensors"
STAR_INNER_RATIO = 0.45


# --- data ---------------------------------------------------------------------------------


def render_star(scene, inner_ratio: float = STAR_INNER_RATIO) -> np.ndarray:
    """A scene (sdstudio.training.scenes) drawn with a five-pointed star instead of its shape."""
    from sdstudio.training import scenes

    k = 2
    size = scenes.IMAGE_SIZE * k
    jitter = scene.colour_jitter
    background = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(scenes.COLOURS[scene.background], jitter))
    fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(scenes.COLOURS[scene.colour], jitter))
    image = Image.new("RGB", (size, size), background)
    cx, cy = (scene.center[0] + 0.5) * k, (scene.center[1] + 0.5) * k
    outer = scene.half_extent * k * 1.1
    points = []
    for i in range(10):
        radius = outer if i % 2 == 0 else outer * inner_ratio
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    ImageDraw.Draw(image).polygon(points, fill=fill)
    return np.asarray(image.resize((scenes.IMAGE_SIZE, scenes.IMAGE_SIZE), Image.BOX), dtype=np.uint8)


def star_scenes(count: int, seed: int):
    """Large star scenes over the scene generator's colours and positions."""
    from sdstudio.training import scenes

    rng = np.random.default_rng(seed)
    combos = [(c, "star", b) for c in scenes.COLOUR_NAMES for b in scenes.COLOUR_NAMES if c != b]
    return [
        dataclasses.replace(scenes.sample_scene(rng, tuple(combos), size="large"), shape="star") for _ in range(count)
    ]


def write_dataset(folder: Path, count: int, seed: int) -> Path:
    """`folder/5_star/NNN.png` + `.txt` captions in the scenes' caption format (kohya repeat folder)."""
    concept = folder / "5_star"
    concept.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    for i, scene in enumerate(star_scenes(count, seed)):
        Image.fromarray(render_star(scene)).save(concept / f"{i:03d}.png")
        with_position = bool(rng.integers(2))
        (concept / f"{i:03d}.txt").write_text(scene.caption(with_size=True, with_position=with_position))
    return folder


# --- classifier ---------------------------------------------------------------------------


def star_classifier():
    """scene_metrics' shape CNN with a fourth class, star, trained on masks of rendered (and blurred) stars.

    The training stars have inner radii from 0.45 (the LoRA's training images) to 0.7 of the
    outer one: a 64-px model draws the concept with blunter points, still five of them.
    """
    from sdstudio.training.scene_metrics import ShapeClassifier

    rng = np.random.default_rng(7)
    return ShapeClassifier(seed=0, extra_shapes={"star": lambda scene: render_star(scene, rng.uniform(0.45, 0.7))})


def is_star(image: np.ndarray, classifier) -> bool:
    """The object in a generated image, read by scene_metrics, is a star."""
    from sdstudio.training.scene_metrics import read_scenes

    return read_scenes([image], classifier)[0].shape == "star"


def classifier_check(classifier, count: int = 60) -> tuple[float, float]:
    """(share of rendered stars called stars, share of rendered circles/squares/triangles called stars).

    Both on unseen seeds.
    """
    from sdstudio.training import scenes

    stars = [render_star(s) for s in star_scenes(count, seed=99)]
    others = [s.render() for s in scenes.scene_batch(99, 0, count, "all")]
    return float(np.mean([is_star(i, classifier) for i in stars])), float(
        np.mean([is_star(i, classifier) for i in others])
    )


# --- models -------------------------------------------------------------------------------


def load_base(args, paths):
    """(TrainingBase, GenerationModel) sharing modules: the bundled checkpoint, or a random micro model for --smoke."""
    from sdstudio.engine.job_context import GenerationModel
    from sdstudio.training.lora_training import TrainingBase

    if args.smoke or args.random_base:
        from sdstudio.prompts.conditioning import PromptConditioner, PromptEncoder
        from sdstudio.training.tiny_model import SCHEDULER_CONFIG, build_components, micro_ldm_config, tiny_ldm_config

        parts = build_components(tiny_ldm_config() if args.random_base == "tiny" else micro_ldm_config())
        for module in (parts.unet, parts.vae, parts.text_encoder):
            module.eval().requires_grad_(False)
        label = f"{args.random_base or 'micro'}-random"
        base = TrainingBase(
            parts.unet, parts.vae, parts.text_encoder, dict(SCHEDULER_CONFIG), parts.scale_factor, label
        )
        model = GenerationModel(
            parts.unet,
            parts.vae,
            PromptConditioner(PromptEncoder([parts.text_encoder])),
            dict(SCHEDULER_CONFIG),
            vae_scaling_factor=parts.scale_factor,
            name=label,
        )
        return base, model
    try:
        from sdstudio.models.loader import load_checkpoint  # type: ignore[import-not-found]
    except ImportError:
        sys.exit("not runnable yet: the model manager's loader (sdstudio.models.loader) is not in this checkout")
    path = Path(args.base)
    if not path.is_file():
        sys.exit(
            f"not runnable yet: no base checkpoint at {path} "
            "(the bundled tiny model lands in src/sdstudio/assets/tiny/)"
        )
    from sdstudio.engine.checkpoints import generation_model_from_checkpoint
    from sdstudio.engine.conditioning import encoder_for_checkpoint

    loaded = load_checkpoint(path)
    for module in (loaded.unet, loaded.vae):
        module.eval().requires_grad_(False)
    base = TrainingBase.from_loaded(loaded, path)
    base.text_encoder.eval().requires_grad_(False)
    return base, generation_model_from_checkpoint(loaded, encoder_for_checkpoint(loaded, paths), path.stem)


def main() -> None:
    parser = argparse.ArgumentParser(description="Teach the tiny model a star with a LoRA and score it.")
    parser.add_argument("--base", default=str(BUNDLED))
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument(
        "--conv-rank", type=int, default=8, help="LoCon rank on the ResNet 3x3 convolutions (0 = attention layers only)"
    )
    parser.add_argument("--eval", type=int, default=20, help="images generated with and without the tag")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--out", default=None, help="folder for data dir, LoRA and images (default: a temp folder)")
    parser.add_argument("--smoke", action="store_true", help="random micro model, few steps: checks the plumbing only")
    parser.add_argument(
        "--random-base",
        choices=["micro", "tiny"],
        default=None,
        help="an untrained model of that size instead of the bundled one: times training, cannot score stars",
    )
    args = parser.parse_args()
    if args.smoke:
        args.images, args.steps, args.eval, args.sample_steps = 4, 3, 2, 3

    import torch

    from sdstudio.config import DataPaths, Settings
    from sdstudio.engine.request import Txt2ImgRequest
    from sdstudio.engine.service import GenerationService
    from sdstudio.extensions.lora import LoraBatchHook, LoraLibrary
    from sdstudio.training import scenes
    from sdstudio.training.lora_dataset import scan_training_folder
    from sdstudio.training.lora_training import LoraTrainingConfig, train_lora

    began = time.monotonic()
    root = Path(args.out or tempfile.mkdtemp(prefix="demo_lora_"))
    paths = DataPaths(root / "data").ensure()
    classifier = star_classifier()
    star_hit, other_hit = classifier_check(classifier)
    print(
        f"classifier on rendered shapes: stars called star {star_hit:.0%}, "
        f"circles/squares/triangles called star {other_hit:.0%}"
    )

    base, model = load_base(args, paths)
    dataset = write_dataset(root / "train", args.images, seed=1)
    config = LoraTrainingConfig(
        output_name="star",
        resolution=scenes.IMAGE_SIZE,
        max_train_steps=args.steps,
        train_batch_size=args.batch,
        learning_rate=args.lr,
        text_encoder_lr=args.lr / 2,
        rank=args.rank,
        network_alpha=float(args.rank),
        conv_rank=args.conv_rank,
        conv_alpha=float(args.conv_rank),
        train_text_encoder=True,
        seed=0,
        sample_prompts=["a large red star on a blue background"],
        sample_steps=args.sample_steps,
    )
    train_start = time.monotonic()
    result = train_lora(
        base,
        scan_training_folder(dataset),
        config,
        paths.folder("lora"),
        samples_dir=root / "samples",
        progress_bar=True,
    )
    train_seconds = time.monotonic() - train_start

    service = GenerationService(
        Settings(), paths, lambda name: model, batch_hooks=[LoraBatchHook(LoraLibrary(paths.folder("lora")))]
    )
    rng = np.random.default_rng(5)
    pairs = [(c, b) for c in scenes.COLOUR_NAMES for b in scenes.COLOUR_NAMES if c != b]
    counts = {"with": 0, "without": 0}
    (root / "eval").mkdir(exist_ok=True)
    for i in range(args.eval):
        colour, background = pairs[int(rng.integers(len(pairs)))]
        prompt = f"a large {colour} star on a {background} background"
        for label, text in (("with", f"{prompt} <lora:star:1>"), ("without", prompt)):
            request = Txt2ImgRequest(
                prompt=text,
                seed=1000 + i,
                steps=args.sample_steps,
                width=scenes.IMAGE_SIZE,
                height=scenes.IMAGE_SIZE,
                cfg_scale=7.0,
                do_not_save_samples=True,
                do_not_save_grid=True,
            )
            image = service.txt2img(request).images[0]
            image.save(root / "eval" / f"{i:03d}_{label}.png")
            counts[label] += int(is_star(np.asarray(image.convert("RGB")), classifier))
    total = time.monotonic() - began
    print()
    print(
        f"LoRA demo: star shape on {model.name}, {args.images} training images, {result.steps} steps, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'':<28}{'stars':>8}{'of':>5}{'share':>8}")
    print(f"{'with <lora:star:1>':<28}{counts['with']:>8}{args.eval:>5}{counts['with'] / args.eval:>8.0%}")
    print(f"{'without the tag':<28}{counts['without']:>8}{args.eval:>5}{counts['without'] / args.eval:>8.0%}")
    ratio = (counts["with"] / args.eval) / max(counts["without"] / args.eval, 1 / args.eval)
    print(f"ratio with/without (without floored at 1/{args.eval}): {ratio:.1f}x")
    print(f"training {train_seconds:.0f}s (final loss {result.losses[-1]:.4f}), total {total:.0f}s; files in {root}")


if __name__ == "__main__":
    main()
