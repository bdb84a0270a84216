"""Demo: a hypernetwork trained on purple circles shifts the bundled tiny model's colours toward them.

The bundled model knows six colours (sdstudio.training.scenes), not purple. This script draws
~20 scenes of purple circles on white ("a large purple circle at the top on a white background"),
creates an A1111 hypernetwork for the model's attention widths, trains it with the code behind
`POST /sdapi/v1/train/hypernetwork` (sdstudio.training.hypernetwork_training), then generates
through the real engine with and without `<hypernet:purple:1>` and measures the colour of the
drawn object (mean RGB of the pixels that are not near-white).

The bundled VAE cannot draw purple at all: it was trained on the six colours and turns the
training images' purple into teal when it encodes and decodes them. So no UNet-side training
(hypernetwork, LoRA, embedding) can make this model draw purple; what training can reach is
the training images as the VAE reproduces them. The target colour is therefore the mean object
colour of the training images after a VAE round trip, and the score is the distance to it
(RGB, 0-441) of each generated image's object colour, with and without the tag.

Result (2026-12-03, 2 shared cores): 300 steps (batch 4, lr 1e-3, relu, 1-2-1) in 23-343 s depending on
the load; loss 0.037 -> 0.015; target RGB [60, 177, 149]; over 20 seeds the object colour is 203 away
from it without the tag and 74 with `<hypernet:purple:1>` (orange circles become green-teal ones).

    .venv/bin/python benchmarks/demo_hypernetwork.py [--steps 300] [--images 20] [--eval 20] [--save DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PURPLE = np.array((140, 40, 190), dtype=np.float32)
WHITE = np.array((245, 245, 245), dtype=np.float32)


def purple_scene(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A red-circle-on-white scene from the scene generator, recoloured purple (anti-aliasing kept)."""
    from sdstudio.training import scenes

    scene = scenes.sample_scene(rng, (("red", "circle", "white"),), size="large")
    red = scene.render().astype(np.float32)
    share = np.clip((WHITE[1] - red[..., 1:2]) / (WHITE[1] - 30.0), 0.0, 1.0)  # how much of a pixel is object
    image = WHITE * (1 - share) + PURPLE * share
    return image.clip(0, 255).astype(np.uint8), scene.caption(with_size=True).replace(" red ", " purple ")


def write_dataset(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, caption = purple_scene(rng)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(caption)
    return folder


def object_colour(image: np.ndarray) -> np.ndarray:
    """Mean RGB of the pixels that are not near-white background."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    drawn = pixels[np.abs(pixels - WHITE).max(axis=1) > 60]
    return drawn.mean(axis=0) if len(drawn) else np.full(3, np.nan)


def training_images(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.glob("*.png"))]


def vae_round_trip(model, image: np.ndarray) -> np.ndarray:
    """The image as the model's VAE encodes and decodes it."""
    import torch

    pixels = torch.from_numpy(np.array(image)).float().permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        decoded = model.decode_latents(model.encode_images(pixels))
    return ((decoded[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).numpy().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--eval", type=int, default=20, help="seeds generated with and without the tag")
    parser.add_argument("--learn-rate", type=float, default=1e-3)
    parser.add_argument("--save", type=Path, default=None, help="write the generated images into this folder")
    args = parser.parse_args(argv)

    from sdstudio.app import open_app
    from sdstudio.engine.request import Txt2ImgRequest
    from sdstudio.extensions.hypernetwork import create_hypernetwork, hypernetworks_applied, load_hypernetwork_file
    from sdstudio.extensions.hypernetwork.library import attention_widths
    from sdstudio.training.hypernetwork_training import (
        HypernetworkTrainingConfig,
        train_hypernetwork,
        training_base_of,
    )
    from sdstudio.training.lora_dataset import scan_training_folder

    with tempfile.TemporaryDirectory() as tmp:
        app = open_app(Path(tmp) / "data")
        model = app.engine.model_source(None)
        data = write_dataset(app.paths.root / "purple", args.images, seed=5)
        path = create_hypernetwork(
            app.paths.folder("hypernetwork"), "purple", attention_widths(model.unet), activation_func="relu"
        )
        net = load_hypernetwork_file(path)
        started = time.monotonic()
        result = train_hypernetwork(
            training_base_of(model),
            scan_training_folder(data),
            net,
            path,
            lambda unet: hypernetworks_applied(unet, [(net, 1.0)]),
            HypernetworkTrainingConfig(
                learn_rate=args.learn_rate, batch_size=4, steps=args.steps, resolution=64, save_every=0
            ),
        )
        seconds = time.monotonic() - started
        losses = result.losses
        print(
            f"trained {result.steps} steps in {seconds:.0f} s;"
            f" loss {np.mean(losses[:20]):.4f} -> {np.mean(losses[-20:]):.4f}"
        )

        target = np.nanmean([object_colour(vae_round_trip(model, image)) for image in training_images(data)], axis=0)

        def distances(tag: str) -> list[float]:
            found = []
            for seed in range(args.eval):
                request = Txt2ImgRequest(
                    prompt=f"a large purple circle in the center on a white background{tag}",
                    seed=1000 + seed,
                    steps=20,
                    width=64,
                    height=64,
                    sampler_name="Euler",
                    do_not_save_samples=True,
                    do_not_save_grid=True,
                )
                image = np.asarray(app.engine.txt2img(request).images[0])
                if args.save is not None:
                    args.save.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(args.save / f"{'tag' if tag else 'plain'}-{seed:03d}.png")
                found.append(float(np.linalg.norm(object_colour(image) - target)))
            return found

        print(f"target (training images through the VAE): RGB {np.round(target).astype(int).tolist()}")
        for label, tag in (("without the tag", ""), ("with <hypernet:purple:1>", " <hypernet:purple:1>")):
            values = distances(tag)
            print(f"{label:>26}: distance to the target {np.nanmean(values):5.1f} (median {np.nanmedian(values):5.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
