"""The checkpoint merger on small hand-made checkpoints: A1111's formulas tensor by tensor, its key rules,
fp16, baked VAE, discarded weights, config copy, metadata, file names, and never overwriting a file."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdstudio.config import DataPaths
from sdstudio.errors import InvalidRequest, NotFound
from sdstudio.models.merge import CheckpointMerger, MergeInterrupted, MergeRequest
from sdstudio.models.registry import ModelRegistry
from sdstudio.models.safe_pickle import safe_load
from sdstudio.models.tensor_stream import SafetensorsReader, TensorSpec, write_safetensors

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
UNET_OUT = "model.diffusion_model.out.2.bias"
VAE_CONV = "first_stage_model.decoder.conv_in.weight"
TOKENS = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
EMA = "model_ema.diffusion_modelout2bias"
EMA_UPDATES = "model_ema.num_updates"
ALPHAS = "alphas_cumprod"  # no "model" in the name: never merged


def tensors(seed: int, in_channels: int = 4, extra: str | None = None) -> dict[str, torch.Tensor]:
    """A small checkpoint with the kinds of keys a real one has."""
    g = torch.Generator().manual_seed(seed)
    out = {
        UNET_IN: torch.randn(8, in_channels, 3, 3, generator=g),
        UNET_OUT: torch.randn(4, generator=g).half(),
        VAE_CONV: torch.randn(6, 4, 3, 3, generator=g),
        TOKENS: torch.randn(10, 6, generator=g),
        POSITION_IDS: torch.arange(7).unsqueeze(0),
        EMA: torch.randn(4, generator=g),
        EMA_UPDATES: torch.tensor(100 + seed, dtype=torch.int32),
        ALPHAS: torch.rand(5, generator=g, dtype=torch.float64).float(),
    }
    if extra:
        out[extra] = torch.randn(3, generator=g)
    return out


@pytest.fixture
def paths(tmp_path):
    return DataPaths(tmp_path / "data").ensure()


@pytest.fixture
def merger(paths):
    return CheckpointMerger(ModelRegistry(paths))


def put(paths, name: str, values: dict[str, torch.Tensor], metadata=None, yaml: str | None = None):
    path = paths.folder("checkpoint") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(values, path, metadata=metadata)
    else:
        torch.save(values, path)
    if yaml is not None:
        path.with_suffix(".yaml").write_text(yaml)
    return path


def add_difference(a: str, **fields) -> MergeRequest:
    """`a` + M(b - c), b and c being the files of those names."""
    return MergeRequest(
        primary_model_name=a,
        secondary_model_name="b",
        tertiary_model_name="c",
        interp_method="Add difference",
        **fields,
    )


def test_weighted_sum_is_a1111s_formula_tensor_by_tensor(paths, merger):
    a, b = tensors(1, extra="model.only_in_a"), tensors(2, extra="model.only_in_b")
    put(paths, "a.safetensors", a)
    put(paths, "b.safetensors", b)
    result = merger.merge(MergeRequest(primary_model_name="a", secondary_model_name="b.safetensors", multiplier=0.3))
    assert result.path.name == "0.7(a) + 0.3(b).safetensors"
    out = load_file(result.path)
    assert set(out) == set(a)  # A's keys: B's own are dropped
    for key in (UNET_IN, UNET_OUT, VAE_CONV, TOKENS, EMA):
        assert torch.equal(out[key], (1 - 0.3) * a[key] + 0.3 * b[key]), key
        assert out[key].dtype == a[key].dtype
    for key in (POSITION_IDS, EMA_UPDATES, ALPHAS, "model.only_in_a"):
        assert torch.equal(out[key], a[key]), key
    assert result.entry.title.startswith("0.7(a) + 0.3(b).safetensors [")


def test_add_difference_is_a1111s_formula_and_a_tensor_c_lacks_adds_nothing(paths, merger):
    a, b, c = tensors(1), tensors(2), tensors(3)
    del c[TOKENS]
    for name, values in (("a", a), ("b", b), ("c", c)):
        put(paths, f"{name}.safetensors", values)
    result = merger.merge(add_difference("a", multiplier=0.75))
    assert result.path.name == "a + 0.75(b - c).safetensors"
    out = load_file(result.path)
    for key in (UNET_IN, UNET_OUT, VAE_CONV, EMA):
        assert torch.equal(out[key], a[key] + 0.75 * (b[key] - c[key])), key
    assert torch.equal(out[TOKENS], a[TOKENS])
    assert torch.equal(out[ALPHAS], a[ALPHAS])


def test_inpainting_a_merges_its_first_four_input_channels_with_a_normal_b(paths, merger):
    a, b, c = tensors(1, in_channels=9), tensors(2), tensors(3)
    for name, values in (("inpaint", a), ("b", b), ("c", c)):
        put(paths, f"{name}.safetensors", values)
    result = merger.merge(add_difference("inpaint", multiplier=1))
    assert result.is_inpainting
    assert result.path.name == "inpaint + 1.0(b - c).inpainting.safetensors"
    merged = load_file(result.path)[UNET_IN]
    assert merged.shape == (8, 9, 3, 3)
    assert torch.equal(merged[:, :4], a[UNET_IN][:, :4] + 1 * (b[UNET_IN] - c[UNET_IN]))
    assert torch.equal(merged[:, 4:], a[UNET_IN][:, 4:])

    with pytest.raises(InvalidRequest) as refused:
        merger.merge(MergeRequest(primary_model_name="b", secondary_model_name="inpaint"))
    assert refused.value.field == "primary_model_name" and "inpainting" in refused.value.reason


def test_models_of_different_kinds_are_refused_by_name(paths, merger):
    other = tensors(2)
    other[TOKENS] = torch.randn(10, 8)
    put(paths, "a.safetensors", tensors(1))
    put(paths, "sdxl.safetensors", other)
    with pytest.raises(InvalidRequest) as refused:
        merger.merge(MergeRequest(primary_model_name="a", secondary_model_name="sdxl"))
    assert refused.value.field == "secondary_model_name" and TOKENS in refused.value.reason
    assert list(paths.folder("checkpoint").glob("0.7*")) == []


def test_save_as_half_halves_what_was_merged_or_everything_without_interpolation(paths, merger):
    a = tensors(1)
    put(paths, "a.safetensors", a)
    put(paths, "b.safetensors", tensors(2))
    out = load_file(
        merger.merge(MergeRequest(primary_model_name="a", secondary_model_name="b", save_as_half=True)).path
    )
    assert out[UNET_IN].dtype == out[TOKENS].dtype == torch.float16
    assert out[ALPHAS].dtype == torch.float32  # A1111 halves only the merged tensors
    assert out[POSITION_IDS].dtype == torch.int64

    # Without a custom name A1111 would write over model A itself; here that is refused.
    with pytest.raises(InvalidRequest, match="a.safetensors already exists"):
        merger.merge(MergeRequest(primary_model_name="a", interp_method="No interpolation", save_as_half=True))
    result = merger.merge(
        MergeRequest(primary_model_name="a", interp_method="No interpolation", save_as_half=True, custom_name="a16")
    )
    out = load_file(result.path)
    assert all(out[key].dtype == torch.float16 for key in (UNET_IN, VAE_CONV, TOKENS, ALPHAS, EMA))
    assert torch.equal(out[UNET_IN], a[UNET_IN].half())
    assert out[EMA_UPDATES].dtype == torch.int32


def test_no_interpolation_converts_format_to_ckpt_that_loads(paths, merger):
    a = tensors(1)
    put(paths, "a.safetensors", a)
    result = merger.merge(
        MergeRequest(primary_model_name="a", interp_method="No interpolation", checkpoint_format="ckpt")
    )
    assert result.path.name == "a.ckpt"
    loaded = safe_load(result.path)
    assert set(loaded) == set(a)
    assert all(torch.equal(loaded[key], a[key]) for key in a)


def test_ckpt_inputs_and_old_text_encoder_names_are_read_as_a1111_renames_them(paths, merger):
    a, b = tensors(1), tensors(2)
    old = "cond_stage_model.transformer.embeddings.token_embedding.weight"
    a[old], b[old] = a.pop(TOKENS), b.pop(TOKENS)
    put(paths, "a.ckpt", {"state_dict": a})
    put(paths, "b.safetensors", b)
    out = load_file(merger.merge(MergeRequest(primary_model_name="a.ckpt", secondary_model_name="b")).path)
    assert old not in out
    assert torch.equal(out[TOKENS], 0.7 * a[old] + 0.3 * b[old])


def test_bake_in_vae_replaces_the_vae_skipping_loss_and_ema_counters(paths, merger):
    a = tensors(1)
    put(paths, "a.safetensors", a)
    put(paths, "b.safetensors", tensors(2))
    vae_dir = paths.folder("vae")
    vae_dir.mkdir(parents=True, exist_ok=True)
    vae_conv = torch.randn(6, 4, 3, 3)
    save_file(
        {
            "decoder.conv_in.weight": vae_conv,
            "loss.logvar": torch.zeros(()),
            "model_ema.decay": torch.tensor(0.5),
            "encoder.not_in_a.weight": torch.ones(2),
        },
        vae_dir / "better.vae.safetensors",
    )
    result = merger.merge(
        MergeRequest(primary_model_name="a", secondary_model_name="b", bake_in_vae="better.vae.safetensors")
    )
    out = load_file(result.path)
    assert torch.equal(out[VAE_CONV], vae_conv)
    assert set(out) == set(a)
    recipe = json.loads(load_metadata(result.path)["sd_merge_recipe"])
    assert recipe["bake_in_vae"] == "better.vae.safetensors"

    save_file({"decoder.unrelated.weight": torch.ones(2)}, vae_dir / "other.safetensors")
    with pytest.raises(InvalidRequest) as refused:
        merger.merge(MergeRequest(primary_model_name="a", interp_method="No interpolation", bake_in_vae="other"))
    assert refused.value.field == "bake_in_vae"
    with pytest.raises(NotFound, match="^bake_in_vae: "):
        merger.merge(MergeRequest(primary_model_name="a", interp_method="No interpolation", bake_in_vae="nope"))


def test_discard_weights_leaves_out_matching_names(paths, merger):
    put(paths, "a.safetensors", tensors(1))
    put(paths, "b.safetensors", tensors(2))
    result = merger.merge(
        MergeRequest(primary_model_name="a", secondary_model_name="b", discard_weights=r"^model_ema|position_ids")
    )
    out = load_file(result.path)
    assert EMA not in out and EMA_UPDATES not in out and POSITION_IDS not in out
    assert UNET_IN in out
    with pytest.raises(InvalidRequest) as refused:
        MergeRequest(primary_model_name="a", discard_weights="(")
    assert refused.value.field == "discard_weights"


@pytest.mark.parametrize("regex", [r"diffusion_model", r"^cond_stage_model\.", r"first_stage", r"."])
def test_a_discard_that_leaves_out_weights_the_checkpoint_needs_is_refused_and_writes_nothing(paths, merger, regex):
    put(paths, "a.safetensors", tensors(1))
    put(paths, "b.safetensors", tensors(2))
    before = sorted(p.name for p in paths.folder("checkpoint").iterdir())
    with pytest.raises(InvalidRequest) as refused:
        merger.merge(MergeRequest(primary_model_name="a", secondary_model_name="b", discard_weights=regex))
    assert refused.value.field == "discard_weights" and "needs to generate" in str(refused.value)
    assert sorted(p.name for p in paths.folder("checkpoint").iterdir()) == before


@pytest.mark.parametrize(
    ("source", "expected"), [(0, "b-config"), ("A, B or C", "b-config"), (1, "b-config"), (2, None), (3, None)]
)
def test_config_is_copied_from_the_chosen_model(paths, merger, source, expected):
    put(paths, "a.safetensors", tensors(1))
    put(paths, "b.safetensors", tensors(2), yaml="b-config")
    put(paths, "c.safetensors", tensors(3))
    result = merger.merge(add_difference("a", config_source=source))
    yaml = result.path.with_suffix(".yaml")
    assert (yaml.read_text() if yaml.exists() else None) == expected
    assert result.config == (yaml if expected else None)
    assert result.entry.config == result.config


def load_metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def test_metadata_recipe_and_models_as_a1111_writes_them(paths, merger):
    put(paths, "a.safetensors", tensors(1), metadata={"modelspec.title": "A", "ss_note": "from a"})
    put(paths, "sub/b.safetensors", tensors(2), metadata={"modelspec.title": "B"})
    registry = merger.registry
    a, b = registry.find_checkpoint("a"), registry.find_checkpoint("sub/b.safetensors")
    first = merger.merge(
        MergeRequest(
            primary_model_name="a",
            secondary_model_name="sub/b.safetensors",
            multiplier=0.5,
            custom_name="ab",
            metadata_json='{"license": "mine", "n": 2}',
        )
    )
    metadata = load_metadata(first.path)
    assert metadata["format"] == "pt"
    assert metadata["modelspec.title"] == "B" and metadata["ss_note"] == "from a"  # copied, later models win
    assert metadata["license"] == "mine" and metadata["n"] == "2"
    assert json.loads(metadata["sd_merge_recipe"]) == {
        "type": "webui",
        "primary_model_hash": a.sha256,
        "secondary_model_hash": b.sha256,
        "tertiary_model_hash": None,
        "interp_method": "Weighted sum",
        "multiplier": 0.5,
        "save_as_half": False,
        "custom_name": "ab",
        "config_source": 0,
        "bake_in_vae": "None",
        "discard_weights": "",
        "is_inpainting": False,
        "is_instruct_pix2pix": False,
    }
    assert json.loads(metadata["sd_merge_models"]) == {
        a.sha256: {"name": "a.safetensors", "legacy_hash": a.hashes.legacy, "sd_merge_recipe": None},
        b.sha256: {"name": "sub/b.safetensors", "legacy_hash": b.hashes.legacy, "sd_merge_recipe": None},
    }
    assert first.path.name == "ab.safetensors"

    # A merge of a merge records its ancestors and its recipe.
    second = merger.merge(
        MergeRequest(
            primary_model_name="ab", interp_method="No interpolation", custom_name="ab2", copy_metadata_fields=False
        )
    )
    metadata = load_metadata(second.path)
    assert "license" not in metadata
    models = json.loads(metadata["sd_merge_models"])
    assert set(models) == {first.entry.sha256, a.sha256, b.sha256}
    assert models[first.entry.sha256]["sd_merge_recipe"]["custom_name"] == "ab"

    bare = merger.merge(
        MergeRequest(primary_model_name="a", secondary_model_name="sub/b.safetensors", save_metadata=False)
    )
    assert load_metadata(bare.path) == {}


def test_an_existing_file_is_never_overwritten(paths, merger):
    put(paths, "a.safetensors", tensors(1))
    put(paths, "b.safetensors", tensors(2))
    request = MergeRequest(primary_model_name="a", secondary_model_name="b", custom_name="mix")
    first = merger.merge(request)
    before = first.path.read_bytes()
    put(paths, "b.safetensors", tensors(5))
    with pytest.raises(InvalidRequest) as refused:
        merger.merge(request)
    assert refused.value.field == "custom_name" and "already exists" in refused.value.reason
    assert first.path.read_bytes() == before
    assert [p.name for p in first.path.parent.iterdir() if p.name.startswith(".")] == []


def test_bad_requests_name_their_field(paths, merger):
    put(paths, "a.safetensors", tensors(1))
    with pytest.raises(NotFound, match="^primary_model_name: "):
        merger.merge(MergeRequest(primary_model_name="nope", secondary_model_name="a"))
    with pytest.raises(NotFound, match="^secondary_model_name: "):
        merger.merge(MergeRequest(primary_model_name="a", secondary_model_name="nope"))
    for request, field in (
        (dict(primary_model_name=""), "primary_model_name"),
        (dict(primary_model_name="a"), "secondary_model_name"),
        (dict(primary_model_name="a", secondary_model_name="a", interp_method="Add difference"), "tertiary_model_name"),
    ):
        with pytest.raises(InvalidRequest) as refused:
            merger.merge(MergeRequest(**request))
        assert refused.value.field == field
    for fields, field in (
        (dict(interp_method="Average"), "interp_method"),
        (dict(checkpoint_format="pt"), "checkpoint_format"),
        (dict(config_source=4), "config_source"),
        (dict(custom_name="../evil"), "custom_name"),
        (dict(metadata_json="[1]"), "metadata_json"),
        (dict(multiplier=float("nan")), "multiplier"),
    ):
        with pytest.raises(InvalidRequest) as refused:
            MergeRequest(primary_model_name="a", **fields)
        assert refused.value.field == field


def test_an_interrupted_merge_saves_nothing(paths, merger):
    put(paths, "a.safetensors", tensors(1))
    put(paths, "b.safetensors", tensors(2))
    seen = []
    with pytest.raises(MergeInterrupted):
        merger.merge(
            MergeRequest(primary_model_name="a", secondary_model_name="b"),
            progress=lambda text, done, total: seen.append((text, done, total)),
            interrupted=lambda: len(seen) > 3,
        )
    assert sorted(p.name for p in paths.folder("checkpoint").iterdir()) == ["a.safetensors", "b.safetensors"]
    assert ("Merging", 1, len(tensors(1))) in seen


def test_streamed_safetensors_are_read_back_by_the_safetensors_library(tmp_path):
    values = {
        "big": torch.randn(3, 5),
        "half": torch.randn(7).half(),
        "brain": torch.randn(2, 2).bfloat16(),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3, dtype=torch.int64),
        "empty": torch.zeros(0, 4),
        "bytes": torch.arange(5, dtype=torch.uint8),
    }
    specs = [TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in values.items()]
    path = tmp_path / "s.safetensors"
    size = write_safetensors(path, specs, lambda spec: values[spec.name], {"a": "b"})
    assert size == os.path.getsize(path)
    loaded = load_file(path)
    assert set(loaded) == set(values) and all(torch.equal(loaded[k], values[k]) for k in values)
    assert load_metadata(path) == {"a": "b"}
    with SafetensorsReader(path) as reader:
        assert all(torch.equal(reader.read(k), values[k]) for k in values)
    with pytest.raises(ValueError, match="made torch.float32 .1,., the header says"):
        write_safetensors(tmp_path / "bad.safetensors", specs, lambda spec: torch.zeros(1))


def test_a_malformed_tensor_table_is_a_model_load_error(tmp_path):
    from sdstudio.errors import ModelLoadError

    header = json.dumps({"w": {"dtype": "F32", "shape": "x", "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(ModelLoadError, match="bad.safetensors"):
        SafetensorsReader(path)
