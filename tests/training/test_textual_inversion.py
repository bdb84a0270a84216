"""Textual inversion on the bundled model: A1111-format files, only the vectors learn, previews, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sdstudio.errors import InvalidRequest
from sdstudio.prompts.embeddings import EmbeddingDatabase, load_embedding_file
from sdstudio.training import scenes
from sdstudio.training.lora_training import TrainingBase
from sdstudio.training.templates import DatasetOptions, TemplateDataset
from sdstudio.training.textual_inversion import (
    TextualInversionConfig,
    TextualInversionTrainer,
    create_embedding,
    token_embedding_layer,
)


@pytest.fixture(scope="module")
def base():
    from sdstudio.models.detect import bundled_tiny_model
    from sdstudio.models.loader import load_checkpoint

    path = bundled_tiny_model()
    assert path is not None
    return TrainingBase.from_loaded(load_checkpoint(path), path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("purple")
    for i in range(4):
        scene = scenes.sample_scene(np.random.default_rng(i), (("red", "circle", "white"),))
        pixels = scene.render().copy()
        object_pixels = (abs(pixels.astype(int) - [245, 245, 245]).sum(-1)) > 60
        pixels[object_pixels] = (140, 40, 200)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("circle, white background")
    return folder


@pytest.fixture(scope="module")
def dataset(base, images):
    options = DatasetOptions(placeholder="purp", training_width=64, training_height=64)
    return TemplateDataset(images, ["a [name] [filewords]"], options, base.vae, base.vae_scaling_factor)


def settings(**overrides) -> TextualInversionConfig:
    values = dict(
        embedding_name="purp",
        learn_rate="0.05:2, 0.01",
        batch_size=2,
        gradient_step=2,
        steps=4,
        create_image_every=0,
        save_embedding_every=0,
        preview_steps=2,
        preview_width=64,
        preview_height=64,
        seed=3,
    )
    values.update(overrides)
    return TextualInversionConfig(**values)


def test_create_embedding_writes_a1111_layout_from_the_init_text(base, tmp_path):
    from sdstudio.prompts.tokenizer import tokenize

    path = create_embedding(base.text_encoder, tmp_path, "pu/rp!", num_vectors_per_token=3, init_text="red circle")
    assert path.name == "purp.pt"
    data = torch.load(path, weights_only=True)
    assert data["string_to_token"] == {"*": 265} and data["name"] == "purp" and data["step"] == 0
    assert set(data) >= {"sd_checkpoint", "sd_checkpoint_name"}
    vectors = data["string_to_param"]["*"]
    table = token_embedding_layer(base.text_encoder).weight
    ids = tokenize("red circle")
    assert vectors.shape == (3, table.shape[1])
    assert torch.equal(vectors[0], table[ids[0]]) and torch.equal(vectors[2], table[ids[1]])  # i * tokens // vectors
    assert EmbeddingDatabase(tmp_path).get("purp").vector_count == 3
    with pytest.raises(InvalidRequest) as caught:
        create_embedding(base.text_encoder, tmp_path, "purp")
    assert caught.value.field == "name" and "already exists" in str(caught.value)
    assert create_embedding(base.text_encoder, tmp_path, "purp", 1, "", overwrite_old=True) == path
    assert torch.count_nonzero(torch.load(path, weights_only=True)["string_to_param"]["*"]) == 0
    with pytest.raises(InvalidRequest) as caught:
        create_embedding(base.text_encoder, tmp_path, "other", num_vectors_per_token=0)
    assert caught.value.field == "num_vectors_per_token"


def test_training_moves_only_the_vectors_and_writes_files_a1111_and_kohya_read(base, dataset, tmp_path):
    path = create_embedding(base.text_encoder, tmp_path / "embeddings", "purp", 2, "red")
    start = torch.load(path, weights_only=True)["string_to_param"]["*"]
    frozen = {k: v.clone() for k, v in base.text_encoder.state_dict().items()}
    unet_weight = next(base.unet.parameters()).detach().clone()
    previews = []
    config = settings(save_embedding_every=2, create_image_every=2, save_safetensors=True)
    trainer = TextualInversionTrainer(base, path, dataset, config, tmp_path / "log", on_preview=previews.append)
    result = trainer.train()
    assert result.step == 4 and len(result.losses) == 4 and not result.interrupted
    trained = load_embedding_file(path)
    assert (
        trained.step == 4 and trained.sd_checkpoint_name == "sdstudio-tiny" and len(trained.sd_checkpoint or "") == 10
    )
    assert not torch.equal(trained.vectors_for(None), start)
    assert all(torch.equal(v, frozen[k]) for k, v in base.text_encoder.state_dict().items())
    assert torch.equal(next(base.unet.parameters()), unet_weight)
    assert isinstance(token_embedding_layer(base.text_encoder), torch.nn.Embedding)  # put back
    log = tmp_path / "log"
    assert sorted(p.name for p in (log / "embeddings").iterdir()) == [
        "purp-2.pt",
        "purp-2.safetensors",
        "purp-4.pt",
        "purp-4.safetensors",
    ]
    kohya = load_file(str(log / "purp.safetensors"))
    assert list(kohya) == ["emb_params"] and torch.equal(kohya["emb_params"], trained.vectors_for(None))
    assert [p.name for p in result.previews] == ["purp-2.png", "purp-2.png", "purp-4.png", "purp-4.png"]
    assert len(previews) == 2 and previews[0].size == (64, 64)
    stored = load_embedding_file(log / "image_embeddings" / "purp-4.png")  # the sd-ti-embedding chunk
    assert stored.name == "purp-4" and torch.allclose(stored.vectors_for(None), trained.vectors_for(None))
    assert "sd-ti-embedding" not in Image.open(log / "images" / "purp-4.png").text
    lines = (log / "textual_inversion_loss.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,epoch_step,loss,learn_rate" and len(lines) == 5
    assert [line.split(",")[-1] for line in lines[1:]] == ["0.05", "0.05", "0.01", "0.01"]
    assert (path.parent / "purp.pt.optim").is_file()


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(base, dataset, tmp_path):
    straight = create_embedding(base.text_encoder, tmp_path / "a", "purp", 2, "red")
    TextualInversionTrainer(base, straight, dataset, settings(), tmp_path / "log-a").train()

    resumed = create_embedding(base.text_encoder, tmp_path / "b", "purp", 2, "red")
    stops = iter([False, False, True])
    first = TextualInversionTrainer(
        base, resumed, dataset, settings(), tmp_path / "log-b", interrupted=lambda: next(stops)
    ).train()
    assert first.interrupted and first.step == 2 and load_embedding_file(resumed).step == 2
    second = TextualInversionTrainer(base, resumed, dataset, settings(), tmp_path / "log-b")
    assert second.resumed_exactly
    result = second.train()
    assert result.resumed_from == 2 and result.step == 4
    assert torch.equal(load_embedding_file(resumed).vectors_for(None), load_embedding_file(straight).vectors_for(None))


def test_bad_fields_are_named(base, dataset, tmp_path):
    path = create_embedding(base.text_encoder, tmp_path, "purp", 1, "red")
    for overrides, field in (
        ({"learn_rate": "fast"}, "learn_rate"),
        ({"clip_grad_mode": "value", "clip_grad_value": "x"}, "clip_grad_value"),
        ({"clip_grad_mode": "sometimes"}, "clip_grad_mode"),
        ({"batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            TextualInversionTrainer(base, path, dataset, settings(**overrides), tmp_path / "log")
        assert caught.value.field == field
    with pytest.raises(InvalidRequest) as caught:
        TextualInversionTrainer(base, tmp_path / "missing.pt", dataset, settings(), tmp_path / "log")
    assert caught.value.field == "embedding_name"
