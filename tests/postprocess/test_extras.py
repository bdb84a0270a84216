"""Extras: A1111 steps and infotext keys, batch and folder input, saving with metadata kept."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from postprocess_networks import noise_image, save_compact

from sdstudio.errors import InvalidRequest, NotFound
from sdstudio.postprocess.extras import (
    ExtrasBatchImagesRequest,
    ExtrasOptions,
    ExtrasSingleImageRequest,
    NamedImage,
    PostprocessService,
)
from sdstudio.postprocess.image_files import format_infotext_parameters

SOURCE_PARAMETERS = (
    "a red circle\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 64x48"
)


@pytest.fixture
def service(paths, settings_store) -> PostprocessService:
    save_compact(paths.folder("upscaler", "RealESRGAN") / "my-compact-2x.pth", scale=2)
    return PostprocessService.build(paths, settings_store)


def _generated_png(path) -> Image.Image:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", SOURCE_PARAMETERS)
    noise_image(64, 48).save(path, pnginfo=info)
    return Image.open(path)


def test_single_image_upscale_saved_with_infotext_kept_and_extended(service, paths, tmp_path):
    source = _generated_png(tmp_path / "gen.png")
    request = ExtrasSingleImageRequest(image=source, upscaler_1="my-compact-2x", upscaling_resize=2)
    result = service.run_single(request, save=True)
    item = result.images[0]
    assert item.image.size == (128, 96)
    assert item.infotext == "Postprocess upscale by: 2, Postprocess upscaler: my-compact-2x"
    assert item.saved_path == paths.root / "outputs" / "extras-images" / "00000.png"
    saved = Image.open(item.saved_path)
    assert saved.size == (128, 96)
    assert saved.info["parameters"] == SOURCE_PARAMETERS + ", " + item.infotext
    assert saved.info["postprocessing"] == item.infotext == saved.info["extras"]  # A1111's chunks
    assert "<p>Postprocess upscale by: 2" in result.html_info
    again = service.run_single(request, save=True)
    assert again.images[0].saved_path.name == "00001.png"  # numbered, nothing overwritten


def test_two_upscalers_blend_by_visibility(service):
    image = noise_image(40, 32)
    options = dict(
        upscaling_resize=2, upscaler_1="my-compact-2x", upscaler_2="Nearest", extras_upscaler_2_visibility=0.25
    )
    result = service.run_single(ExtrasSingleImageRequest(image=image, **options)).images[0]
    first = service.upscalers.upscale(image, scale=2, name="my-compact-2x")
    second = service.upscalers.upscale(image, scale=2, name="Nearest")
    expected = Image.blend(first, second, 0.25)
    assert np.abs(np.asarray(result.image).astype(int) - np.asarray(expected).astype(int)).max() <= 1
    assert result.infotext.endswith("Postprocess upscaler: my-compact-2x, Postprocess upscaler 2: Nearest")


def test_resize_to_with_crop_and_without(service):
    image = noise_image(40, 32)
    cropped = service.run_single(
        ExtrasSingleImageRequest(
            image=image, resize_mode=1, upscaling_resize_w=120, upscaling_resize_h=60, upscaler_1="Lanczos"
        )
    ).images[0]
    assert cropped.image.size == (120, 60)
    assert (
        cropped.infotext == "Postprocess upscale to: 120x60, Postprocess crop to: 120x60, Postprocess upscaler: Lanczos"
    )
    kept = service.run_single(
        ExtrasSingleImageRequest(
            image=image,
            resize_mode=1,
            upscaling_resize_w=120,
            upscaling_resize_h=60,
            upscaling_crop=False,
            upscaler_1="Lanczos",
        )
    ).images[0]
    assert kept.image.size == (120, 96)  # scaled by max(120/40, 60/32) = 3, aspect kept


def test_batch_list_keeps_names(service, tmp_path):
    request = ExtrasBatchImagesRequest(
        imageList=[NamedImage(image=noise_image(32, 32, seed=i), name=f"pic{i}.png") for i in range(3)],
        upscaler_1="Nearest",
        upscaling_resize=2,
    )
    result = service.run_batch(request, save=True, outdir=tmp_path / "out")
    assert [r.saved_path.name for r in result.images] == ["pic0.png", "pic1.png", "pic2.png"]
    assert all(Image.open(r.saved_path).size == (64, 64) for r in result.images)


def test_folder_input_skips_unreadable_files_with_a_note(service, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    noise_image(24, 24).save(folder / "a.png")
    noise_image(24, 16).save(folder / "b.jpg")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    result = service.run_files(
        [folder], ExtrasOptions(upscaler_1="Lanczos", upscaling_resize=2), outdir=tmp_path / "out"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert any("broken.png" in note for note in result.notes)


def test_unknown_upscaler_fails_before_any_work(service, paths):
    with pytest.raises(NotFound) as missing:
        service.run_single(ExtrasSingleImageRequest(image=noise_image(16, 16), upscaler_1="4x-Nope"), save=True)
    assert "upscaler_1" in str(missing.value) and "my-compact-2x" in str(missing.value)
    assert not (paths.root / "outputs" / "extras-images").exists()


def test_face_restoration_step_records_a1111_keys_and_note(service):
    result = service.run_single(
        ExtrasSingleImageRequest(image=noise_image(64, 64), codeformer_visibility=0.8, codeformer_weight=0.25)
    ).images[0]
    assert result.infotext == "CodeFormer visibility: 0.8, CodeFormer weight: 0.25"
    assert result.notes == ["CodeFormer: no face found; image unchanged"]


def test_infotext_values_are_quoted_as_a1111():
    assert (
        format_infotext_parameters({"Postprocess upscaler": "4x, sharp", "Postprocess upscale by": 2})
        == 'Postprocess upscaler: "4x, sharp", Postprocess upscale by: 2'
    )


def test_request_fields_are_a1111s():
    fields = set(ExtrasOptions.model_fields)
    assert fields == {
        "resize_mode",
        "show_extras_results",
        "gfpgan_visibility",
        "codeformer_visibility",
        "codeformer_weight",
        "upscaling_resize",
        "upscaling_resize_w",
        "upscaling_resize_h",
        "upscaling_crop",
        "upscaler_1",
        "upscaler_2",
        "extras_upscaler_2_visibility",
        "upscale_first",
    }
    assert "imageList" in ExtrasBatchImagesRequest.model_fields and "image" in ExtrasSingleImageRequest.model_fields


@pytest.mark.parametrize(
    "fields, field_name",
    [
        ({"upscaling_resize": float("nan")}, "upscaling_resize"),
        ({"upscaling_resize": 1e308}, "upscaling_resize"),
        ({"upscaling_resize_w": 10**9}, "upscaling_resize_w"),
        ({"codeformer_weight": float("inf")}, "codeformer_weight"),
    ],
)
def test_bad_options_are_an_invalid_request_naming_the_field(fields, field_name):
    with pytest.raises(InvalidRequest) as info:
        ExtrasOptions(**fields)
    assert info.value.field == field_name
