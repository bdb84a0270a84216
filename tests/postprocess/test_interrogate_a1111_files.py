"""A1111's own interrogation files: Salesforce's BLIP .pth and OpenAI's CLIP TorchScript .pt, read inertly.

The converters are checked against the key names and shapes of the real files (as Salesforce's
models/vit.py + models/med.py and OpenAI's clip/model.py name them), and the tiny files the
round-trip tests write are checked to use exactly those names.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from importlib import resources

import pytest
import torch
from malicious_files import FORMS, Payload, unscannable_pickle, write_malicious
from PIL import Image
from tiny_models import (
    openai_clip_state_dict,
    salesforce_blip_state_dict,
    tiny_blip_captioner,
    tiny_openai_clip,
    write_blip_folder,
    write_clip_folder,
    write_openai_clip_archive,
    write_salesforce_blip,
    write_torchscript_archive,
)

from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.errors import ModelLoadError, UnsafeFileError
from sdstudio.models.torchscript_archive import read_torchscript_tensors
from sdstudio.postprocess.blip_checkpoint import (
    blip_config_from_state_dict,
    blip_tokenizer,
    read_blip_checkpoint,
    transformers_blip_state_dict,
)
from sdstudio.postprocess.interrogate import Interrogator
from sdstudio.postprocess.openai_clip_checkpoint import (
    clip_config_from_state_dict,
    read_openai_clip,
    transformers_clip_state_dict,
)
from sdstudio.prompts.tokenizer import clip_tokenizer

IMAGE = Image.new("RGB", (48, 40), (30, 90, 200))
OPTIONS = dict(interrogate_clip_min_length=4, interrogate_clip_max_length=10, interrogate_return_ranks=True)


def salesforce_blip_shapes(width=768, layers=12, patch=16, image=384, vocab=30524, positions=512) -> dict:
    """Key -> shape of Salesforce's BLIP captioner .pth (blip_decoder: models/vit.py ViT + models/med.py BERT)."""
    grid = image // patch
    shapes = {
        "visual_encoder.cls_token": (1, 1, width),
        "visual_encoder.pos_embed": (1, grid * grid + 1, width),
        "visual_encoder.patch_embed.proj.weight": (width, 3, patch, patch),
        "visual_encoder.patch_embed.proj.bias": (width,),
        "visual_encoder.norm.weight": (width,),
        "visual_encoder.norm.bias": (width,),
        "text_decoder.bert.embeddings.position_ids": (1, positions),
        "text_decoder.bert.embeddings.word_embeddings.weight": (vocab, width),
        "text_decoder.bert.embeddings.position_embeddings.weight": (positions, width),
        "text_decoder.bert.embeddings.LayerNorm.weight": (width,),
        "text_decoder.bert.embeddings.LayerNorm.bias": (width,),
        "text_decoder.cls.predictions.bias": (vocab,),
        "text_decoder.cls.predictions.transform.dense.weight": (width, width),
        "text_decoder.cls.predictions.transform.dense.bias": (width,),
        "text_decoder.cls.predictions.transform.LayerNorm.weight": (width,),
        "text_decoder.cls.predictions.transform.LayerNorm.bias": (width,),
        "text_decoder.cls.predictions.decoder.weight": (vocab, width),
        "text_decoder.cls.predictions.decoder.bias": (vocab,),
    }
    for n in range(layers):
        block = f"visual_encoder.blocks.{n}."
        for name, shape in (
            ("norm1", (width,)),
            ("attn.qkv", (3 * width, width)),
            ("attn.proj", (width, width)),
            ("norm2", (width,)),
            ("mlp.fc1", (4 * width, width)),
            ("mlp.fc2", (width, 4 * width)),
        ):
            shapes[f"{block}{name}.weight"], shapes[f"{block}{name}.bias"] = shape, shape[:1]
        layer = f"text_decoder.bert.encoder.layer.{n}."
        for attention in ("attention", "crossattention"):
            for name in ("self.query", "self.key", "self.value", "output.dense"):
                shapes[f"{layer}{attention}.{name}.weight"] = (width, width)
                shapes[f"{layer}{attention}.{name}.bias"] = (width,)
            shapes[f"{layer}{attention}.output.LayerNorm.weight"] = (width,)
            shapes[f"{layer}{attention}.output.LayerNorm.bias"] = (width,)
        shapes[f"{layer}intermediate.dense.weight"], shapes[f"{layer}intermediate.dense.bias"] = (
            (4 * width, width),
            (4 * width,),
        )
        shapes[f"{layer}output.dense.weight"], shapes[f"{layer}output.dense.bias"] = (width, 4 * width), (width,)
        shapes[f"{layer}output.LayerNorm.weight"], shapes[f"{layer}output.LayerNorm.bias"] = (width,), (width,)
    return shapes


def openai_clip_shapes(vision_width, vision_layers, patch, image, text_width, text_layers, embed) -> dict:
    """Key -> shape of OpenAI's ViT CLIP (clip/model.py; the state dict of the TorchScript file)."""
    grid = image // patch
    shapes = {
        "positional_embedding": (77, text_width),
        "text_projection": (text_width, embed),
        "logit_scale": (),
        "input_resolution": (),
        "context_length": (),
        "vocab_size": (),
        "token_embedding.weight": (49408, text_width),
        "ln_final.weight": (text_width,),
        "ln_final.bias": (text_width,),
        "visual.class_embedding": (vision_width,),
        "visual.positional_embedding": (grid * grid + 1, vision_width),
        "visual.proj": (vision_width, embed),
        "visual.conv1.weight": (vision_width, 3, patch, patch),
        "visual.ln_pre.weight": (vision_width,),
        "visual.ln_pre.bias": (vision_width,),
        "visual.ln_post.weight": (vision_width,),
        "visual.ln_post.bias": (vision_width,),
    }
    for prefix, width, layers in (("", text_width, text_layers), ("visual.", vision_width, vision_layers)):
        for n in range(layers):
            block = f"{prefix}transformer.resblocks.{n}."
            shapes[f"{block}attn.in_proj_weight"], shapes[f"{block}attn.in_proj_bias"] = (
                (3 * width, width),
                (3 * width,),
            )
            for name, shape in (
                ("attn.out_proj", (width, width)),
                ("ln_1", (width,)),
                ("mlp.c_fc", (4 * width, width)),
                ("mlp.c_proj", (width, 4 * width)),
                ("ln_2", (width,)),
            ):
                shapes[f"{block}{name}.weight"], shapes[f"{block}{name}.bias"] = shape, shape[:1]
    return shapes


VIT_L_14 = openai_clip_shapes(1024, 24, 14, 224, 768, 12, 768)
VIT_B_32 = openai_clip_shapes(768, 12, 32, 224, 512, 12, 512)


def on_meta(shapes: dict) -> dict:
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def shapes_of(state_dict: dict) -> dict:
    return {key: tuple(tensor.shape) for key, tensor in state_dict.items()}


def name_patterns(keys) -> set[str]:
    return {re.sub(r"\.\d+\.", ".N.", key) for key in keys}


def test_blip_conversion_of_the_real_files_names_and_shapes_fills_transformers_blip_exactly():
    from transformers import BlipForConditionalGeneration

    original = on_meta(salesforce_blip_shapes())
    config = blip_config_from_state_dict(original, blip_tokenizer())

    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (768, 12, 12)
    assert (vision.image_size, vision.patch_size, vision.intermediate_size) == (384, 16, 3072)
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (30524, 768, 12, 12)
    assert (text.encoder_hidden_size, text.max_position_embeddings) == (768, 512)
    assert (text.bos_token_id, text.sep_token_id, text.pad_token_id) == (30522, 102, 0)
    with torch.device("meta"):
        expected = BlipForConditionalGeneration(config).state_dict()
    assert shapes_of(transformers_blip_state_dict(original)) == shapes_of(expected)


@pytest.mark.parametrize(
    "original, vision, text, projection",
    [
        (VIT_L_14, (1024, 24, 16, 224, 14, 4096), (768, 12, 12, 3072), 768),
        (VIT_B_32, (768, 12, 12, 224, 32, 3072), (512, 12, 8, 2048), 512),
    ],
    ids=["ViT-L-14", "ViT-B-32"],
)
def test_clip_conversion_of_openai_names_and_shapes_fills_transformers_clip_exactly(original, vision, text, projection):
    from transformers import CLIPModel

    config = clip_config_from_state_dict(on_meta(original))

    v, t = config.vision_config, config.text_config
    assert (
        v.hidden_size,
        v.num_hidden_layers,
        v.num_attention_heads,
        v.image_size,
        v.patch_size,
        v.intermediate_size,
    ) == vision
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size) == text
    assert (config.projection_dim, t.max_position_embeddings, t.eos_token_id, v.hidden_act) == (
        projection,
        77,
        49407,
        "quick_gelu",
    )
    with torch.device("meta"):
        expected = CLIPModel(config).state_dict()
    assert shapes_of(transformers_clip_state_dict(on_meta(original))) == shapes_of(expected)


def test_the_tiny_files_use_the_real_files_names():
    """The round-trip tests below write their files under exactly the real names (layer numbers aside)."""
    assert name_patterns(salesforce_blip_state_dict(tiny_blip_captioner())) == name_patterns(salesforce_blip_shapes())
    assert name_patterns(openai_clip_state_dict(tiny_openai_clip())) == name_patterns(VIT_L_14)


def test_shipped_bert_vocabulary_and_blip_tokenizer_are_bert_base_uncased_with_blips_tokens():
    lines = resources.files("sdstudio.assets").joinpath("blip", "bert-base-uncased-vocab.txt").read_text("utf-8")
    vocab = lines.split("\n")[:-1]
    assert len(vocab) == 30522
    assert [vocab.index(token) for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the")] == [
        0,
        100,
        101,
        102,
        103,
        1996,
    ]

    tokenizer = blip_tokenizer()

    assert tokenizer("a picture of ").input_ids == [101, 1037, 3861, 1997, 102]  # BLIP's prompt
    assert (tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("[ENC]"), len(tokenizer)) == (30522, 30523, 30524)
    # transformers' BLIP conversion check: the caption ids of its demo image under this tokenizer
    ids = [30522, 1037, 3861, 1997, 1037, 2450, 3564, 2006, 1996, 3509, 2007, 2014, 3899, 102]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a picture of a woman sitting on the beach with her dog"


def test_salesforce_blip_file_loads_the_weights_and_config_it_was_made_from(tmp_path):
    source = tiny_blip_captioner(seed=3)
    path = write_salesforce_blip(tmp_path / "model_base_caption_capfilt_large.pth", source)

    model, processor = read_blip_checkpoint(path)

    assert shapes_of(model.state_dict()) == shapes_of(source.state_dict())
    assert all(torch.equal(model.state_dict()[key], value) for key, value in source.state_dict().items())
    assert model.config.vision_config.layer_norm_eps == 1e-6 and model.config.vision_config.image_size == 32
    assert processor.image_processor.size == {"height": 32, "width": 32}


@pytest.mark.parametrize("layout", ["torchscript", "state_dict"])
def test_openai_clip_file_loads_the_weights_it_was_made_from(tmp_path, layout):
    source = tiny_openai_clip(seed=4)
    path = tmp_path / "ViT-L-14.pt"
    if layout == "torchscript":
        write_openai_clip_archive(path, source)
    else:
        torch.save(openai_clip_state_dict(source), path)

    model, image_processor = read_openai_clip(path)

    assert all(torch.equal(model.state_dict()[key].float(), value) for key, value in source.state_dict().items())
    assert image_processor.crop_size == {"height": 32, "width": 32}


def test_a1111_files_interrogate_as_the_hugging_face_models_they_came_from(tmp_path):
    blip, clip = tiny_blip_captioner(seed=1), tiny_openai_clip(seed=2)
    a1111, reference = DataPaths(tmp_path / "a1111"), DataPaths(tmp_path / "reference")
    write_salesforce_blip(a1111.root / "models" / "BLIP" / "model_base_caption_capfilt_large.pth", blip)
    (a1111.root / "models" / "CLIP").mkdir(parents=True)
    torch.save(openai_clip_state_dict(clip), a1111.root / "models" / "CLIP" / "ViT-L-14.pt")  # a plain state dict
    write_blip_folder(reference.root / "models" / "BLIP" / "blip", blip)
    write_clip_folder(reference.root / "models" / "CLIP" / "clip", clip)
    for paths in (a1111, reference):
        (paths.root / "models" / "interrogate").mkdir(parents=True)
        (paths.root / "models" / "interrogate" / "flavors.top2.txt").write_text("soft light\nfilm grain\nbokeh\n")

    captions = [
        Interrogator(
            paths, SettingsStore(paths, Settings(device="cpu", **OPTIONS)), clip_tokenizer=lambda: clip_tokenizer("sd1")
        ).interrogate(IMAGE, "clip")
        for paths in (a1111, reference)
    ]

    assert captions[0] == captions[1] and captions[0].count("(") == 2, captions


@pytest.mark.parametrize("form", FORMS)
def test_blip_file_asking_for_a_forbidden_global_is_refused_and_nothing_runs(tmp_path, form):
    marker = tmp_path / "ran"
    path = write_malicious(tmp_path / "models" / "BLIP" / "model_base_caption_capfilt_large.pth", marker, form)
    write_clip_folder(tmp_path / "models" / "CLIP" / "clip", tiny_openai_clip())
    paths = DataPaths(tmp_path)
    store = SettingsStore(paths, Settings(device="cpu"))
    interrogator = Interrogator(paths, store, clip_tokenizer=lambda: clip_tokenizer("sd1"))

    with pytest.raises(UnsafeFileError) as error:
        interrogator.interrogate(IMAGE, "clip")

    message = str(error.value)
    assert message.startswith(f"{path.name}: refused as unsafe") and "system" in message
    assert not marker.exists()


def test_torchscript_archive_gives_tensors_by_attribute_path_without_reading_its_code(tmp_path):
    weight = torch.arange(12, dtype=torch.float16).reshape(3, 4)
    tensors = {
        "visual.proj": weight.t(),
        "logit_scale": torch.tensor(4.6),
        "transformer.resblocks.0.attn.in_proj_bias": weight[1],
    }
    written = write_torchscript_archive(tmp_path / "written.pt", tensors)
    # The archive's TorchScript code is replaced by code that would fail: it is never read, let alone run.
    archive = tmp_path / "ViT-L-14.pt"
    with zipfile.ZipFile(written) as source, zipfile.ZipFile(archive, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"raise SystemExit(1)\n" if "/code/" in name else source.read(name))

    read = read_torchscript_tensors(archive)

    assert {key: read[key] for key in tensors}.keys() == tensors.keys()
    assert all(torch.equal(read[key], value) and read[key].dtype == value.dtype for key, value in tensors.items())


@pytest.mark.parametrize("form", ["plain", "unscannable"])
def test_torchscript_archive_asking_for_a_forbidden_global_is_refused_and_nothing_runs(tmp_path, form):
    marker = tmp_path / "ran"
    archive = tmp_path / "ViT-L-14.pt"
    data = pickle.dumps(Payload(marker), protocol=2) if form == "plain" else unscannable_pickle(marker)
    with zipfile.ZipFile(archive, "w") as target:
        target.writestr("ViT-L-14/data.pkl", data)
        target.writestr("ViT-L-14/constants.pkl", pickle.dumps((), protocol=2))
        target.writestr("ViT-L-14/code/__torch__.py", b"")

    with pytest.raises(UnsafeFileError) as error:
        read_torchscript_tensors(archive)

    assert str(error.value).startswith("ViT-L-14.pt: refused as unsafe") and "system" in str(error.value)
    assert not marker.exists()


def test_a_truncated_torchscript_archive_is_a_load_error_naming_the_file(tmp_path):
    written = write_torchscript_archive(tmp_path / "whole.pt", {"visual.proj": torch.ones(4, 2)})
    archive = tmp_path / "ViT-L-14.pt"
    with zipfile.ZipFile(written) as source, zipfile.ZipFile(archive, "w") as target:
        for name in source.namelist():
            target.writestr(name, source.read(name)[:4] if "/data/" in name else source.read(name))

    with pytest.raises(ModelLoadError) as error:
        read_torchscript_tensors(archive)

    assert "ViT-L-14.pt" in str(error.value)


def test_blip_file_missing_weights_is_refused_naming_the_file_not_filled_with_random_values(tmp_path):
    path = tmp_path / "model_base_caption_capfilt_large.pth"
    original = salesforce_blip_state_dict(tiny_blip_captioner())
    del original["text_decoder.bert.encoder.layer.1.crossattention.self.key.weight"]
    torch.save({"model": original}, path)

    with pytest.raises(ModelLoadError) as error:
        read_blip_checkpoint(path)

    assert "model_base_caption_capfilt_large.pth: has no weights for" in str(error.value)
    assert "layer.1.crossattention.self.key.weight" in str(error.value)
