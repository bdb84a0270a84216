"""Interrogation (A1111's "Interrogate CLIP"): tiny random BLIP and CLIP in the Hugging Face layout, real code."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image
from tiny_models import BLIP_WORDS, write_tiny_blip, write_tiny_clip_model

from sdstudio.config import Settings, SettingsStore
from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound, NotImplementedYet
from sdstudio.models.memory import ModelMemory
from sdstudio.postprocess.interrogate import Interrogator, builtin_categories_folder
from sdstudio.prompts.tokenizer import clip_tokenizer

IMAGE = Image.new("RGB", (48, 40), (200, 60, 30))
SHORT = dict(interrogate_clip_min_length=4, interrogate_clip_max_length=10)  # fewer BLIP steps


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The tiny models, written once: BLIP, CLIP with its tokenizer, CLIP without one."""
    root = tmp_path_factory.mktemp("interrogate-weights")
    write_tiny_blip(root / "blip")
    write_tiny_clip_model(root / "clip")
    write_tiny_clip_model(root / "clip-no-tokenizer", with_tokenizer=False)
    return root


def install(paths, weights, blip: str | None = "blip", clip: str | None = "clip") -> None:
    """Copy tiny weights into the data dir as A1111 lays them out (models/BLIP/<name>, models/CLIP/<name>)."""
    if blip:
        shutil.copytree(weights / blip, paths.root / "models" / "BLIP" / "tiny-blip")
    if clip:
        shutil.copytree(weights / clip, paths.root / "models" / "CLIP" / "tiny-clip")


def write_categories(paths, **files: list[str]) -> None:
    folder = paths.root / "models" / "interrogate"
    folder.mkdir(parents=True, exist_ok=True)
    for stem, lines in files.items():
        (folder / f"{stem.replace('_', '.')}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def interrogator(paths, memory: ModelMemory | None = None, **options) -> Interrogator:
    store = SettingsStore(paths, Settings(device="cpu", **options))
    return Interrogator(paths, store, memory=memory, clip_tokenizer=lambda: clip_tokenizer("sd1"))


def test_caption_is_blip_text_then_category_lines_in_prompt_order(paths, weights):
    install(paths, weights)
    write_categories(paths, artists=["Claude Monet"], mediums=["a watercolor painting"], movements=["cubism"])
    memory = ModelMemory()

    caption = interrogator(paths, memory).interrogate(IMAGE, "clip")

    suffix = ", a watercolor painting, by Claude Monet, cubism"
    assert caption.endswith(suffix), caption
    blip_text = caption[: -len(suffix)]
    assert blip_text and set(blip_text.split()) <= set(BLIP_WORDS), blip_text
    assert not blip_text.startswith("a picture of")  # BLIP's prompt is not part of the caption
    assert len(memory.keys("interrogator")) == 2  # BLIP and CLIP stay with the memory owner on the CPU


def test_top_n_files_ranks_and_skipped_categories(paths, weights):
    install(paths, weights)
    flavors = ["highly detailed", "soft lighting", "film grain"]
    write_categories(paths, flavors_top2=flavors, mediums=["a photograph"], artists=["Rembrandt"])
    options = dict(SHORT, interrogate_return_ranks=True, interrogate_clip_skip_categories=["artists"])

    parts = interrogator(paths, **options).interrogate(IMAGE, "clip").split(", ")

    # max_length counts BLIP's start token and its 3-token prompt, as in A1111
    assert 1 <= len(parts[0].split()) <= 10 - 4
    assert parts[-3].startswith("(a photograph:1.000")
    ranked = [part.strip("()").rpartition(":") for part in parts[-2:]]  # the two best flavors, "(line:probability)"
    assert len({line for line, _, _ in ranked}) == 2 and all(line in flavors for line, _, _ in ranked)
    assert 0 < sum(float(probability) for _, _, probability in ranked) <= 1.0
    assert not any("Rembrandt" in part for part in parts)


def test_shipped_category_lists_when_the_data_dir_has_none(paths, weights):
    install(paths, weights, clip="clip-no-tokenizer")  # the shipped CLIP vocabulary stands in

    parts = interrogator(paths, **SHORT).interrogate(IMAGE, "clip").split(", ")

    shipped = {
        path.stem: path.read_text(encoding="utf-8").splitlines() for path in builtin_categories_folder().glob("*.txt")
    }
    medium, artist, movement, flavor = parts[-4:]
    assert medium in shipped["mediums"]
    assert artist.removeprefix("by ") in shipped["artists"] and artist.startswith("by ")
    assert movement in shipped["movements"]
    assert flavor in shipped["flavors"]


def test_missing_blip_names_its_folder_and_the_files_looked_for(paths, weights):
    install(paths, weights, blip=None)

    with pytest.raises(NotFound) as error:
        interrogator(paths).interrogate(IMAGE, "clip")

    message = str(error.value)
    assert "models/BLIP" in message and "model_base_caption_capfilt_large.pth" in message and "config.json" in message


def test_unreadable_a1111_blip_file_is_a_load_error_naming_it(paths, weights):
    install(paths, weights, blip=None)
    (paths.root / "models" / "BLIP").mkdir(parents=True)
    (paths.root / "models" / "BLIP" / "model_base_caption_capfilt_large.pth").write_bytes(b"not read")

    with pytest.raises(ModelLoadError) as error:
        interrogator(paths).interrogate(IMAGE, "clip")

    assert "model_base_caption_capfilt_large.pth" in str(error.value)


def test_missing_clip_names_its_folder_and_the_files_looked_for(paths, weights):
    install(paths, weights, clip=None)

    with pytest.raises(NotFound) as error:
        interrogator(paths).interrogate(IMAGE, "clip")

    message = str(error.value)
    assert "models/CLIP" in message and "ViT-L-14.pt" in message and "config.json" in message


def test_deepdanbooru_names_its_model_file(paths):
    with pytest.raises(NotFound) as error:
        interrogator(paths).interrogate(IMAGE, "deepdanbooru")
    assert "models/torch_deepdanbooru/model-resnet_custom_v3.pt" in str(error.value)

    model_file = paths.root / "models" / "torch_deepdanbooru" / "model-resnet_custom_v3.pt"
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(b"present")
    with pytest.raises(NotImplementedYet):
        interrogator(paths).interrogate(IMAGE, "deepdanbooru")


def test_unknown_model_names_the_field(paths):
    with pytest.raises(InvalidRequest) as error:
        interrogator(paths).interrogate(IMAGE, "nope")
    assert error.value.field == "model"
