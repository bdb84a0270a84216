"""Checkpoints, upscalers and face restorers share one memory budget (the model-memory owner)."""

from __future__ import annotations

import gc
import weakref

from postprocess_networks import save_compact, save_esrgan, save_gfpgan
from tiny_models import write_tiny_checkpoint

from sdstudio.app import open_app


def test_switching_models_under_a_small_budget_stays_within_it(data_dir_with_model):
    paths_root = data_dir_with_model
    write_tiny_checkpoint(paths_root / "models" / "Stable-diffusion", "second.safetensors", seed=1)
    save_compact(paths_root / "models" / "RealESRGAN" / "compact-2x.pth", scale=2)
    save_esrgan(paths_root / "models" / "ESRGAN" / "4x-Tiny.pth", scale=4)
    save_gfpgan(paths_root / "models" / "GFPGAN" / "GFPGANv1.4.pth")
    app = open_app(paths_root)

    loads = [
        ("checkpoint", lambda: app.engine.model_source("random-tiny.safetensors").unet),
        ("upscaler", lambda: app.postprocess.upscalers.load_model("compact-2x").descriptor.model),
        ("face_restorer", lambda: app.postprocess.face_restorers.load_model("GFPGAN").descriptor.model),
        ("checkpoint", lambda: app.engine.model_source("second.safetensors").unet),
        ("upscaler", lambda: app.postprocess.upscalers.load_model("4x-Tiny").descriptor.model),
        ("checkpoint", lambda: app.engine.model_source("random-tiny.safetensors").unet),
    ]
    # Measure each model once without a budget, then allow only the largest one at a time.
    sizes = {}
    for _kind, load in loads:
        load()
        sizes.update({row["key"]: row["bytes"] for row in app.memory.report()["models"]})
    for kind in ("checkpoint", "upscaler", "face_restorer"):
        app.memory.release_kind(kind)
    largest = max(sizes.values())
    assert sorted(sizes.values())[-2] > 0 and largest < sum(sizes.values())
    app.settings_store.change({"model_memory_budget_mb": (largest + 1) / 2**20})
    budget = app.memory.budget_bytes
    assert 0 < budget < sum(sizes.values())

    alive: list[weakref.ref] = []
    for kind, load in loads:
        alive.append(weakref.ref(load()))
        gc.collect()
        report = app.memory.report()
        assert report["resident"] <= budget, (kind, report)
        # What the owner dropped is really gone: only the resident models are still alive.
        still_alive = sum(ref() is not None for ref in alive)
        assert still_alive == len(report["models"]), (kind, report)
    assert len(app.memory.keys()) < len(loads), "the budget made the owner drop models"
