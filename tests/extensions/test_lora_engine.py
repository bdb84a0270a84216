"""Via the generation service: `<lora:NAME:W>` changes the image; the next untagged job is the base image exactly."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import tiny_generation_model

from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.extensions.lora import LoraBatchHook, LoraLibrary, parse_lora_hashes

from .conftest import kohya_lora_tensors, write_lora


@pytest.fixture
def service(tmp_path, models):
    from sdstudio.engine.service import GenerationService
    from sdstudio.prompts.conditioning import PromptConditioner, PromptEncoder

    unet, te, _ = models
    paths = DataPaths(tmp_path / "data").ensure()
    write_lora(
        paths.folder("lora"),
        "shiny",
        kohya_lora_tensors(unet, te, seed=1, strength=0.5),
        {"ss_output_name": "shiny_v1"},
    )
    model = tiny_generation_model(unet, encoder=PromptConditioner(PromptEncoder([te], architecture="sd1")), name="tiny")
    hook = LoraBatchHook(LoraLibrary(paths.folder("lora")))
    return GenerationService(SettingsStore(paths, Settings()), paths, lambda name, settings: model, batch_hooks=[hook])


def generate(service, prompt: str):
    from sdstudio.engine.request import Txt2ImgRequest

    result = service.txt2img(
        Txt2ImgRequest(
            prompt=prompt, seed=11, steps=3, width=64, height=64, do_not_save_samples=True, do_not_save_grid=True
        )
    )
    return np.asarray(result.images[0]), result


def test_lora_tag_changes_the_image_and_the_next_job_is_the_base_image(service):
    base, _ = generate(service, "a red star")
    with_lora, result = generate(service, "a red star <lora:shiny:1>")
    after, _ = generate(service, "a red star")
    zero, _ = generate(service, "a red star <lora:shiny:0>")
    assert not np.array_equal(with_lora, base)
    assert np.array_equal(after, base)
    assert np.array_equal(zero, base)
    hashes = parse_lora_hashes(result.infotexts[0].split("Lora hashes: ")[1].split('"')[1])
    assert list(hashes) == ["shiny"] and len(hashes["shiny"]) == 12


def test_alias_from_metadata_finds_the_file(service):
    base, _ = generate(service, "a red star <lora:shiny:1>")
    by_alias, result = generate(service, "a red star <lora:shiny_v1:1>")
    assert np.array_equal(by_alias, base)
    assert "shiny_v1:" in result.infotexts[0]


def test_a_lora_in_the_lycoris_folder_is_applied_by_its_tag(data_dir_with_model):
    from sdstudio.app import open_app

    app = open_app(data_dir_with_model)
    model = app.engine.model_source(None)
    tensors = kohya_lora_tensors(model.unet, model.encoder.text_encoders[0], seed=2, strength=0.5)
    write_lora(app.paths.folder("lora", "LyCORIS"), "inky", tensors)

    base, _ = generate(app.engine, "a red star")
    with_lora, result = generate(app.engine, "a red star <lora:inky:1>")
    assert not np.array_equal(with_lora, base)
    assert not result.warnings
    assert list(parse_lora_hashes(result.infotexts[0].split("Lora hashes: ")[1].split('"')[1])) == ["inky"]
