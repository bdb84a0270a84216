"""Claim (issue 22): textual inversion teaches the bundled model a colour it has never seen.

Draws IMAGES scenes of purple objects (every shape, on varied backgrounds, captioned
"circle on a white background") with the scene generator, creates an embedding and trains it
through sdstudio's textual inversion on the bundled model (template "a [name] [filewords]"), then
generates `a <emb> circle on a white background` over SEEDS seeds through the engine
(GenerationService via `open_app`) and counts images whose object is purple: its core colour is
nearer to purple than to any of the six colours the model knows (`scene_metrics.object_rgb`).
The same prompt is generated before the embedding exists (its name then reads as words).

    .venv/bin/python benchmarks/bench_textual_inversion.py [--steps 300] [--seeds 20] [--grid ti.png]

Target (issue 22): >= 70% purple with the embedding, 0% without; prints the table and training time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

PURPLE = (140, 40, 200)
NAME = "purp"
PROMPT = f"a {NAME} circle on a white background"


def draw_dataset(folder: Path, count: int, seed: int) -> None:
    """`count` purple scenes with captions in the model's format minus the colour word."""
    from PIL import Image

    from sdstudio.training import scenes

    colours = {**scenes.COLOURS, "purple": PURPLE}
    rng = np.random.default_rng(seed)
    backgrounds = [name for name in scenes.COLOUR_NAMES if name != "black"]
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        combo = ("purple", scenes.SHAPES[index % len(scenes.SHAPES)], backgrounds[int(rng.integers(len(backgrounds)))])
        scene = scenes.sample_scene(rng, (combo,))
        Image.fromarray(scenes.render_scene(scene, colours)).save(folder / f"{index:02d}.png")
        (folder / f"{index:02d}.txt").write_text(f"{scene.shape} on a {scene.background} background")


def generate(app, prompt: str, seeds: int, steps: int, sampler: str) -> tuple[list[np.ndarray], float]:
    """Images of `prompt` at seeds 0..seeds-1 through the app's engine."""
    from sdstudio.engine.request import Txt2ImgRequest

    request = Txt2ImgRequest(
        prompt=prompt,
        seed=0,
        batch_size=seeds,
        steps=steps,
        cfg_scale=7.0,
        sampler_name=sampler,
        width=64,
        height=64,
        do_not_save_samples=True,
        do_not_save_grid=True,
    )
    began = time.perf_counter()
    result = app.engine.txt2img(request)
    images = [np.asarray(image.convert("RGB")) for image in result.images[result.index_of_first_image :]]
    return images, time.perf_counter() - began


def object_colours(images: list[np.ndarray]) -> list[str | None]:
    """Each image's object colour among the six known ones and purple (None: no object found)."""
    from sdstudio.training import scene_metrics, scenes

    colours = {**scenes.COLOURS, "purple": PURPLE}
    found = [scene_metrics.object_rgb(image) for image in images]
    return [scene_metrics.nearest_colour(f[0], colours) if f is not None else None for f in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--learn-rate", default="0.005")
    parser.add_argument("--save-every", type=int, default=25, help="also score the embedding saved every N steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--vectors", type=int, default=2)
    parser.add_argument("--init-text", default="red")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=Path, default=None, help="save the images (without / with) as a grid")
    args = parser.parse_args()

    import torch

    from sdstudio.app import open_app
    from sdstudio.training.lora_training import TrainingBase
    from sdstudio.training.templates import DatasetOptions, templates_dir
    from sdstudio.training.textual_inversion import (
        EmbeddingTrainingJob,
        TextualInversionConfig,
        create_embedding,
        run_embedding_training,
    )

    data_dir = Path(tempfile.mkdtemp(prefix="bench_ti_")) / "data"
    draw_dataset(data_dir / "purple-images", args.images, args.seed)
    app = open_app(data_dir)
    without, without_seconds = generate(app, PROMPT, args.seeds, args.sample_steps, args.sampler)

    templates = templates_dir(app.paths.root)
    (templates / "colour_filewords.txt").write_text("a [name] [filewords]\n")
    base = TrainingBase.from_file(app.checkpoints.locate(None))
    create_embedding(base.text_encoder, app.paths.folder("embedding"), NAME, args.vectors, args.init_text)
    job = EmbeddingTrainingJob(
        TextualInversionConfig(
            embedding_name=NAME,
            learn_rate=args.learn_rate,
            batch_size=args.batch_size,
            steps=args.steps,
            create_image_every=0,
            save_embedding_every=args.save_every,
            seed=args.seed,
        ),
        DatasetOptions(placeholder=NAME, training_width=64, training_height=64, seed=args.seed),
        data_dir / "purple-images",
        "colour_filewords.txt",
        data_dir / "textual_inversion",
    )

    def report(step: int, total: int, loss: float, text: str) -> None:
        if step % 50 == 0 or step == total:
            print(f"  step {step}/{total} loss {loss:.4f}  {text}", flush=True)

    result = run_embedding_training(base, job, app.paths.folder("embedding"), templates, on_step=report)
    # The numbered embeddings (NAME-STEP) go beside the final one; a fresh app reads them all.
    for saved in result.saved:
        if saved.suffix == ".pt" and saved.stem != f"{NAME}-{result.step}":
            shutil.copyfile(saved, app.paths.folder("embedding") / saved.name)
    trained_app = open_app(data_dir)
    rows = [("without embedding", without, without_seconds)]
    for saved in sorted(result.saved, key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        if saved.suffix == ".pt" and saved.stem != f"{NAME}-{result.step}":
            images, seconds = generate(
                trained_app, PROMPT.replace(NAME, saved.stem), args.seeds, args.sample_steps, args.sampler
            )
            rows.append((f"step {saved.stem.rsplit('-', 1)[1]}", images, seconds))
    with_embedding, with_seconds = generate(trained_app, PROMPT, args.seeds, args.sample_steps, args.sampler)
    rows.append((f"step {result.step} (final)", with_embedding, with_seconds))

    print(
        f"\n{args.images} purple training images, {result.step} steps (batch {args.batch_size}, "
        f"{args.vectors} vectors, lr {args.learn_rate}): trained in {result.seconds:.0f} s "
        f"({result.seconds / max(1, result.step):.2f} s/step, {torch.get_num_threads()} threads), "
        f"final loss {np.mean(result.losses[-20:]):.4f}"
    )
    print(f"\nprompt: {PROMPT!r}, {args.seeds} seeds, {args.sample_steps} steps {args.sampler}\n")
    print(f"{'':18} {'purple':>8} {'share':>7}  object colours seen")
    for label, images, seconds in rows:
        colours = object_colours(images)
        purple = sum(c == "purple" for c in colours)
        labels = [str(c) for c in colours]  # "None": no object found
        tally = ", ".join(f"{name} {labels.count(name)}" for name in sorted(set(labels)))
        print(
            f"{label:18} {purple:>5}/{len(images):<2} {purple / max(1, len(images)):>7.0%}  {tally}  ({seconds:.0f} s)"
        )
    if args.grid is not None:
        from PIL import Image

        rows = [np.concatenate(row, axis=1) for row in (without, with_embedding)]
        Image.fromarray(np.concatenate(rows, axis=0)).save(args.grid)
        print(f"\ngrid: {args.grid} (top: without, bottom: with)")


if __name__ == "__main__":
    main()
