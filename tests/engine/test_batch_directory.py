"""img2img over a folder (Img2ImgBatch) through the real GenerationService on a tiny random model."""

from __future__ import annotations

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.engine.batch_directory import PNG_INFO_PROPS, Img2ImgBatch
from sdstudio.engine.saving import read_infotext
from sdstudio.engine.service import GenerationControl
from sdstudio.errors import InvalidRequest

FIELDS = dict(prompt="a cat", width=64, height=64, steps=2, seed=5, denoising_strength=0.5)


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for number in (10, 2, 1):  # natural order: img1, img2, img10
        Image.new("RGB", (64, 64), (number * 20, 40, 90)).save(folder / f"img{number}.png")
    return folder


def test_files_run_in_natural_order_from_one_seed_and_save_normally_without_an_output_folder(service, inputs):
    events = []
    batch = Img2ImgBatch.create(dict(FIELDS, seed=-1), inputs)
    result = batch.run(service, GenerationControl(on_progress=events.append))
    assert [p.name for p in batch.files] == ["img1.png", "img2.png", "img10.png"]
    assert len(result.images) == 3 and len(set(result.seeds)) == 1  # A1111 fixes the seed once
    seed = result.seeds[0]
    assert [p.name for p in result.saved_paths] == [f"{n:05}-{seed}-a cat.png" for n in range(3)]
    assert all("img2img-images" in p.parts for p in result.saved_paths)
    assert all(read_infotext(Image.open(p)).startswith("a cat\n") for p in result.saved_paths)
    assert {(e.job_no, e.job_count) for e in events} == {(0, 3), (1, 3), (2, 3)}  # counted over the whole batch


def test_interrupt_stops_the_batch_after_the_current_file(service, inputs, tmp_path):
    control = GenerationControl()
    control.on_progress = lambda event: control.interrupt()
    result = Img2ImgBatch.create(FIELDS, inputs, tmp_path / "out").run(service, control)
    assert result.interrupted
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["img1.png"]


def test_a_file_without_its_mask_is_skipped_with_a_warning(service, inputs, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("img1", "img10"):
        Image.new("L", (64, 64), 255).save(masks / f"{name}.png")
    result = Img2ImgBatch.create(FIELDS, inputs, tmp_path / "out", masks).run(service)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img1.png", "img10.png"]
    assert any("img2.png" in w and "no mask named img2.*" in w for w in result.warnings)
    assert all("Mask blur: 4" in text for text in result.infotexts)


def test_png_info_takes_each_inputs_parameters(service, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a dog\nNegative prompt: fog\nSteps: 3, Sampler: Euler, CFG scale: 4, Seed: 77")
    Image.new("RGB", (64, 64), (10, 120, 10)).save(inputs / "dog.png", pnginfo=meta)
    Image.new("RGB", (64, 64), (120, 10, 10)).save(inputs / "plain.png")  # no infotext: the given settings
    result = Img2ImgBatch.create(FIELDS, inputs, tmp_path / "out", png_info_props=PNG_INFO_PROPS).run(service)
    dog = read_infotext(Image.open(tmp_path / "out" / "dog.png"))
    assert dog.startswith("a cat a dog\nNegative prompt: fog\n")
    assert "Steps: 3," in dog and "Sampler: Euler," in dog and "CFG scale: 4," in dog and "Seed: 77," in dog
    plain = read_infotext(Image.open(tmp_path / "out" / "plain.png"))
    assert plain.startswith("a cat\n") and "Seed: 5," in plain and "Steps: 2," in plain
    assert len(result.images) == 2


def test_folders_and_fields_are_checked_before_any_work(tmp_path, inputs):
    cases = [
        ((FIELDS, tmp_path / "nowhere"), "img2img_batch_input_dir"),
        ((FIELDS, inputs / "img1.png"), "img2img_batch_input_dir"),
        ((FIELDS, inputs, inputs / "img1.png"), "img2img_batch_output_dir"),
        ((FIELDS, inputs, None, tmp_path / "nowhere"), "img2img_batch_inpaint_mask_dir"),
        ((dict(FIELDS, width=65), inputs), "width"),
    ]
    for args, field in cases:
        with pytest.raises(InvalidRequest) as caught:
            Img2ImgBatch.create(*args)
        assert caught.value.field == field
