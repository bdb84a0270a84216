"""Upscaler registry: listing as A1111, sizes, tiling, refusal of bad files, latent modes."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from postprocess_networks import noise_image, save_compact, save_esrgan, save_realesrgan_rrdb, save_swinir
from safetensors.torch import save_file

from sdstudio.config import Settings, SettingsStore
from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound
from sdstudio.postprocess.upscalers import (
    LATENT_UPSCALE_MODES,
    UpscalerRegistry,
    axis_blend_weights,
    tile_starts,
    upscale_latent,
)


@pytest.fixture
def model_dir(paths):
    """One file of each published layout in the folders A1111 scans."""
    save_esrgan(paths.folder("upscaler", "ESRGAN") / "4x-Tiny.pth", scale=4)
    save_realesrgan_rrdb(paths.folder("upscaler", "RealESRGAN") / "RealESRGAN_x4plus.pth")
    save_compact(paths.folder("upscaler", "RealESRGAN") / "my-compact-2x.pth", scale=2)
    save_swinir(paths.root / "models" / "SwinIR" / "SwinIR-tiny-x2.pth", scale=2)
    return paths


def test_listing_names_scales_and_order(model_dir, settings_store):
    registry = UpscalerRegistry(model_dir, settings_store)
    listed = registry.list()
    assert [i.name for i in listed[:3]] == ["None", "Lanczos", "Nearest"]
    by_name = {i.name: i for i in listed}
    assert by_name["4x-Tiny"].scale == 4 and by_name["4x-Tiny"].model_name == "ESRGAN"
    assert by_name["R-ESRGAN 4x+"].scale == 4  # A1111's name for RealESRGAN_x4plus.pth
    assert by_name["my-compact-2x"].scale == 2 and by_name["my-compact-2x"].model_name == "RealESRGAN Compact"
    assert by_name["SwinIR-tiny-x2"].scale == 2 and by_name["SwinIR-tiny-x2"].model_name == "SwinIR"
    models = [i.name for i in listed[3:]]
    assert models == sorted(models, key=str.lower)
    api = by_name["4x-Tiny"].to_api_dict()
    assert set(api) == {"name", "model_name", "model_path", "model_url", "scale"}
    assert api["model_path"].endswith("4x-Tiny.pth")
    assert all(i.usable for i in listed)


@pytest.mark.parametrize(
    ("name", "scale", "expected"),
    [
        ("4x-Tiny", 2, (80, 64)),  # 4x model, then Lanczos down to 2x
        ("my-compact-2x", 4, (160, 128)),  # 2x model applied twice
        ("SwinIR-tiny-x2", 2, (80, 64)),
        ("R-ESRGAN 4x+", 1.5, (56, 48)),  # A1111 rounds the destination down to a multiple of 8
        ("Lanczos", 3, (120, 96)),
        ("Nearest", 2, (80, 64)),
        ("None", 2, (80, 64)),  # A1111's Upscaler.upscale resizes with Lanczos for "None" too
    ],
)
def test_upscale_by_gives_requested_size(model_dir, settings_store, name, scale, expected):
    registry = UpscalerRegistry(model_dir, settings_store)
    out = registry.upscale(noise_image(40, 32), scale=scale, name=name)
    assert out.size == expected and out.mode == "RGB"


def test_upscale_to_target_size(model_dir, settings_store):
    registry = UpscalerRegistry(model_dir, settings_store)
    out = registry.upscale(noise_image(40, 32), target=(100, 70), name="my-compact-2x")
    assert out.size == (100, 70)


def test_model_passes_stop_at_three(model_dir, settings_store):
    """A 2x model asked for 16x runs three times (8x) and Lanczos does the rest, as A1111."""
    registry = UpscalerRegistry(model_dir, settings_store)
    runs = []
    registry.upscale(
        noise_image(16, 16), scale=16, name="my-compact-2x", on_tile=lambda done, total: runs.append(done == total)
    )
    assert sum(runs) == 3


def _seam_mask(length: int, tile: int, overlap: int, scale: int, radius: int) -> np.ndarray:
    """Output positions within `radius` input pixels of an inner tile edge."""
    near = np.zeros(length * scale, dtype=bool)
    for start in tile_starts(length, tile, overlap):
        for edge in (start, start + tile):
            if 0 < edge < length:
                near[max(0, (edge - radius) * scale) : (edge + radius) * scale] = True
    return near


@pytest.mark.parametrize(
    ("builder", "size", "tile", "overlap", "radius"),
    [
        (save_compact, (100, 84), 56, 24, 5),  # 4 convolutions: receptive radius 4
        (save_esrgan, (160, 128), 100, 20, 20),  # one RRDB: ~18 convolutions at input resolution
    ],
)
def test_tiled_matches_untiled_away_from_seams(paths, builder, size, tile, overlap, radius):
    """Tolerance: at most 1 level (of 255) away from seams; the whole image within a mean of 2 levels."""
    model_file = paths.folder("upscaler", "ESRGAN") / "model.pth"
    if builder is save_compact:
        builder(model_file, scale=2, num_conv=2)
    else:
        builder(model_file, scale=4, num_filters=8, num_blocks=1)
    width, height = size
    image = noise_image(width, height, seed=3)
    tiled = UpscalerRegistry(paths, SettingsStore(paths, Settings(ESRGAN_tile=tile, ESRGAN_tile_overlap=overlap)))
    whole = UpscalerRegistry(paths, SettingsStore(paths, Settings(ESRGAN_tile=0)))
    model = whole.load_model("model")
    a = np.asarray(tiled.run_model(model, image)).astype(int)
    b = np.asarray(whole.run_model(model, image)).astype(int)
    scale = model.scale
    assert a.shape == b.shape == (height * scale, width * scale, 3)
    near_y = _seam_mask(height, tile, overlap, scale, radius)
    near_x = _seam_mask(width, tile, overlap, scale, radius)
    away = ~near_y[:, None] & ~near_x[None, :]
    assert away.sum() > 0.1 * away.size
    assert np.abs(a - b)[away].max() <= 1
    assert np.abs(a - b).mean() < 2.0


def test_tile_weights_are_a_partition_of_unity():
    for length, tile, overlap in [(100, 56, 24), (192, 64, 8), (65, 64, 8), (300, 40, 30), (50, 64, 8)]:
        starts = tile_starts(length, min(tile, length), overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        total = np.zeros(length)
        for start, weight in zip(starts, axis_blend_weights(starts, min(tile, length), length, overlap)):
            total[start : start + min(tile, length)] += weight
        np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_large_image_is_processed_in_tiles(model_dir):
    registry = UpscalerRegistry(model_dir, SettingsStore(model_dir, Settings(ESRGAN_tile=64, ESRGAN_tile_overlap=8)))
    seen = []
    out = registry.upscale(
        noise_image(200, 160), scale=2, name="my-compact-2x", on_tile=lambda done, total: seen.append(total)
    )
    assert out.size == (400, 320)
    assert seen[-1] == 4 * 3


class _CreatesFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_bad_files_are_listed_unusable_with_one_line_reason(paths, settings_store, tmp_path):
    folder = paths.folder("upscaler", "ESRGAN")
    save_esrgan(folder / "good.pth")
    save_file({"encoder.foo.weight": torch.zeros(3, 3)}, folder / "unknown-arch.safetensors")
    (folder / "corrupt.pth").write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    marker = tmp_path / "pwned.txt"
    with open(folder / "malicious.pth", "wb") as handle:
        pickle.dump({"params": _CreatesFile(marker)}, handle, protocol=2)

    registry = UpscalerRegistry(paths, settings_store)
    by_name = {i.name: i for i in registry.list()}
    assert by_name["good"].usable
    for name in ("unknown-arch", "corrupt", "malicious"):
        info = by_name[name]
        assert not info.usable, name
        assert "\n" not in info.reason and info.reason
        assert f"{name}." in info.reason  # names the file
    assert "not recognised" in by_name["unknown-arch"].reason
    assert "open" in by_name["malicious"].reason  # names the forbidden global
    assert not marker.exists()
    assert "malicious" not in registry.names()

    with pytest.raises(ModelLoadError) as refused:
        registry.upscale(noise_image(16, 16), scale=2, name="malicious")
    assert "cannot be used" in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()


def test_unknown_name_lists_available(model_dir, settings_store):
    registry = UpscalerRegistry(model_dir, settings_store)
    with pytest.raises(NotFound) as missing:
        registry.upscale(noise_image(16, 16), scale=2, name="4x-Nope")
    assert "4x-Nope" in str(missing.value) and "Lanczos" in str(missing.value) and "4x-Tiny" in str(missing.value)


def test_invalid_scale_is_refused(model_dir, settings_store):
    registry = UpscalerRegistry(model_dir, settings_store)
    with pytest.raises(InvalidRequest, match="scale"):
        registry.upscale(noise_image(16, 16), scale=0, name="Lanczos")


def test_refresh_sees_new_files(paths, settings_store):
    registry = UpscalerRegistry(paths, settings_store)
    assert registry.names() == ["None", "Lanczos", "Nearest"]
    save_compact(paths.folder("upscaler", "ESRGAN") / "late-2x.pth")
    registry.refresh()
    assert "late-2x" in registry.names()


def test_alpha_is_dropped_like_a1111(model_dir, settings_store):
    rgba = Image.new("RGBA", (24, 16), (10, 200, 30, 128))
    out = UpscalerRegistry(model_dir, settings_store).upscale(rgba, scale=2, name="my-compact-2x")
    assert out.mode == "RGB" and out.size == (48, 32)


def test_latent_upscale_modes_table_and_resize():
    assert list(LATENT_UPSCALE_MODES) == [
        "Latent",
        "Latent (antialiased)",
        "Latent (bicubic)",
        "Latent (bicubic antialiased)",
        "Latent (nearest)",
        "Latent (nearest-exact)",
    ]
    latent = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(1, 4, 1, 1)
    for name in LATENT_UPSCALE_MODES:
        assert upscale_latent(latent, 8, 6, name).shape == (1, 4, 8, 6)
    nearest = upscale_latent(latent, 8, 8, "Latent (nearest)")
    assert torch.equal(nearest[0, 0, ::2, ::2], latent[0, 0])
    bilinear = upscale_latent(latent, 8, 8, "Latent")
    assert torch.allclose(bilinear, torch.nn.functional.interpolate(latent, size=(8, 8), mode="bilinear"))
    with pytest.raises(InvalidRequest, match="hr_upscaler"):
        upscale_latent(latent, 8, 8, "Latent (bogus)")


def test_probe_results_persist_between_runs(paths, settings_store):
    """A restart reads model scales from cache/upscalers.json instead of loading every file again."""
    model = save_compact(paths.folder("upscaler", "ESRGAN") / "cached-2x.pth", scale=2)
    assert UpscalerRegistry(paths, settings_store).get("cached-2x").scale == 2
    cache = paths.cache_dir / "upscalers.json"
    rows = json.loads(cache.read_text())
    assert [r["info"]["name"] for r in rows] == ["cached-2x"]
    rows[0]["info"]["scale"] = 3.0  # pretend: only a cache hit can report this
    cache.write_text(json.dumps(rows))
    assert UpscalerRegistry(paths, settings_store).get("cached-2x").scale == 3.0
    save_compact(model, scale=4, seed=1)  # the file changes: probed again
    assert UpscalerRegistry(paths, settings_store).get("cached-2x").scale == 4
