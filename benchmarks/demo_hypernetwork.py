"""Demo: a hypernetwork trained on purple circles shifts the bundled tiny model's colours toward purple.

The bundled model knows six colours (sdstudio.training.scenes), not purple. This script draws
~20 scenes of purple circles on white ("a large purple circle at the top on a white background"),
creates an A1111 hypernetwork for the model's attention widths, trains it with the code behind
`POST /sdapi/v1/train/hypernetwork` (sdstudio.training.hypernetwork_training), then generates
through the real engine with and without `<hypernet:purple:1>` and measures purple:

    purple pixel  <=>  hue in [255°, 320°], saturation >= 0.35, value >= 0.25
    purple image  <=>  at least 3% of its pixels are purple

Target (issue 22): "shifts colour measurably": purple images with the tag well above without.

    .venv/bin/python benchmarks/demo_hypernetwork.py [--steps 400] [--images 20] [--eval 20]
"""

from __future__ import annotations

import argparse
import colorsys
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


def purple_share(image: np.ndarray) -> float:
    """Share of the image's pixels that are purple (see the module docstring)."""
    pixels = image.reshape(-1, 3) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in pixels])
    hue = hsv[:, 0] * 360
    return float(np.mean((hue >= 255) & (hue <= 320) & (hsv[:, 1] >= 0.35) & (hsv[:, 2] >= 0.25)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--eval", type=int, default=20, help="seeds generated with and without the tag")
    parser.add_argument("--learn-rate", type=float, default=2e-4)
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

        def shares(tag: str) -> list[float]:
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
                found.append(purple_share(np.asarray(app.engine.txt2img(request).images[0])))
            return found

        without, with_tag = shares(""), shares(" <hypernet:purple:1>")
        for label, values in (("without the tag", without), ("with <hypernet:purple:1>", with_tag)):
            images = np.mean([v >= 0.03 for v in values])
            print(f"{label:>26}: purple images {images:.0%}, purple pixels {np.mean(values):.1%} (mean)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
