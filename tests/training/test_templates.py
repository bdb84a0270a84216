"""A1111's prompt templates and the shared image dataset: placeholders, captions, latent sampling methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.errors import InvalidRequest
from sdstudio.training.templates import (
    STANDARD_TEMPLATES,
    DatasetOptions,
    TemplateDataset,
    list_templates,
    read_template,
    templates_dir,
)


@pytest.fixture(scope="module")
def vae():
    from sdstudio.training.tiny_model import build_components, micro_ldm_config

    return build_components(micro_ldm_config(), seed=0).vae.eval().requires_grad_(False)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / "01-a purple circle.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "two.png")
    (folder / "two.txt").write_text("purple, square, white background")
    return folder


def test_the_standard_templates_are_copied_once_and_user_edits_stay(tmp_path):
    folder = templates_dir(tmp_path)
    assert sorted(list_templates(folder)) == sorted(STANDARD_TEMPLATES)
    assert read_template(folder, "none.txt") == ["picture"]
    assert "a photo of a [name], [filewords]" in read_template(folder, "subject_filewords.txt")
    assert all("[name]" in line for line in read_template(folder, "style.txt"))
    (folder / "mine.txt").write_text("a [name] thing\n\n")
    (folder / "none.txt").write_text("edited\n")
    templates_dir(tmp_path)
    assert read_template(folder, "mine") == ["a [name] thing"] and read_template(folder, "none.txt") == ["edited"]
    with pytest.raises(InvalidRequest) as caught:
        read_template(folder, "nope.txt")
    assert caught.value.field == "template_filename" and "subject.txt" in str(caught.value)


def test_prompts_fill_name_and_filewords_from_captions_or_file_names(images, vae):
    options = DatasetOptions(placeholder="purp", training_width=32, training_height=32)
    dataset = TemplateDataset(images, ["a [name] [filewords]"], options, vae, 0.5)
    generator = torch.Generator().manual_seed(0)
    batch = dataset.batch([0, 1], generator)
    assert batch.texts == ["a purp a purple circle", "a purp purple, square, white background"]
    assert batch.latents.shape == (2, 4, 8, 8) and batch.weights is None
    assert len(dataset) == 2


def test_tag_drop_out_and_shuffle_draw_from_the_generator(images, vae):
    options = DatasetOptions(
        placeholder="p", training_width=32, training_height=32, shuffle_tags=True, tag_drop_out=0.3
    )
    dataset = TemplateDataset(images, ["[filewords]"], options, vae, 1.0)
    texts = [dataset.batch([1], torch.Generator().manual_seed(s)).texts[0] for s in range(12)]
    assert texts == [dataset.batch([1], torch.Generator().manual_seed(s)).texts[0] for s in range(12)]
    assert len(set(texts)) > 2  # different orders and drops
    assert all(set(t.split(",")) <= {"purple", " square", " white background", ""} for t in texts)


def test_latent_sampling_methods(images, vae):
    def latents(method, seed):
        options = DatasetOptions(placeholder="p", training_width=32, training_height=32, latent_sampling_method=method)
        dataset = TemplateDataset(images, ["[name]"], options, vae, 1.0)
        return dataset, dataset.batch([0], torch.Generator().manual_seed(seed)).latents

    dataset, deterministic = latents("deterministic", 0)
    assert torch.equal(deterministic[0], dataset.entries[0].mean)
    _, once_a = latents("once", 0)
    _, once_b = latents("once", 1)
    assert torch.equal(once_a, once_b) and not torch.equal(once_a, deterministic)
    _, random_a = latents("random", 0)
    _, random_b = latents("random", 1)
    assert not torch.equal(random_a, random_b)
    with pytest.raises(InvalidRequest) as caught:
        latents("sometimes", 0)
    assert caught.value.field == "latent_sampling_method"


def test_alpha_weighs_the_loss_and_varsize_keeps_sizes(tmp_path, vae):
    folder = tmp_path / "alpha"
    folder.mkdir()
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, :16, 3] = 255
    Image.fromarray(rgba, "RGBA").save(folder / "half.png")
    options = DatasetOptions(placeholder="p", training_width=32, training_height=32, use_weight=True)
    weights = TemplateDataset(folder, ["[name]"], options, vae, 1.0).batch([0], torch.Generator()).weights
    assert weights is not None and weights.shape == (1, 1, 8, 8)
    assert float(weights.mean()) == pytest.approx(1.0, abs=1e-4) and bool(
        (weights[0, 0, :, 0] > weights[0, 0, :, -1]).all()
    )
    Image.fromarray(np.zeros((24, 40, 3), dtype=np.uint8)).save(folder / "wide.png")
    sized = TemplateDataset(folder, ["[name]"], DatasetOptions(placeholder="p", varsize=True), vae, 1.0)
    assert [tuple(e.mean.shape[1:]) for e in sized.entries] == [(8, 8), (6, 10)]
    with pytest.raises(InvalidRequest) as caught:
        sized.batch([0, 1], torch.Generator())
    assert caught.value.field == "varsize"
