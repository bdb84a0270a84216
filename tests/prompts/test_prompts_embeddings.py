"""Textual-inversion files in every supported format are found, measured and filtered by model width."""

from __future__ import annotations

import logging
import pickle

import torch
from safetensors.torch import save_file

from sdstudio.prompts.embeddings import EmbeddingDatabase


def write_a1111_pt(path, vectors):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": torch.nn.Parameter(vectors)},
            "name": "ignored",
            "step": 1500,
            "sd_checkpoint": "a1b2c3d4",
            "sd_checkpoint_name": "v1-5",
        },
        path,
    )


def make_folder(root):
    write_a1111_pt(root / "a1111_style.pt", torch.randn(3, 768))
    (root / "concepts").mkdir(parents=True)
    torch.save({"<cat-toy>": torch.randn(768)}, root / "concepts" / "cat_toy.bin")
    (root / "deep" / "er").mkdir(parents=True)
    save_file({"emb_params": torch.randn(2, 768)}, str(root / "deep" / "er" / "st_emb.safetensors"))
    save_file({"clip_l": torch.randn(4, 768), "clip_g": torch.randn(4, 1280)}, str(root / "xl_emb.safetensors"))
    save_file({"emb_params": torch.randn(1, 1024)}, str(root / "sd2_emb.safetensors"))
    return root


def test_all_formats_listed_with_counts_and_shapes(tmp_path):
    db = EmbeddingDatabase(make_folder(tmp_path / "embeddings"))
    rows = {row["name"]: row for row in db.listing()}
    assert {n: (r["vectors"], r["shape"], r["architecture"]) for n, r in rows.items()} == {
        "a1111_style": (3, 768, "sd1"),
        "cat_toy": (1, 768, "sd1"),
        "st_emb": (2, 768, "sd1"),
        "xl_emb": (4, 2048, "sdxl"),
        "sd2_emb": (1, 1024, "sd2"),
    }
    assert rows["a1111_style"]["step"] == 1500
    assert db.errors == {}


def test_wrong_architecture_is_skipped_with_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        db = EmbeddingDatabase(make_folder(tmp_path / "embeddings"), expected_width=768)
    assert sorted(db.embeddings) == ["a1111_style", "cat_toy", "st_emb"]
    assert sorted(db.skipped) == ["sd2_emb", "xl_emb"]
    assert "xl_emb" in caplog.text and "sdxl" in caplog.text
    api = db.api_listing()
    assert api["loaded"]["a1111_style"] == {
        "step": 1500,
        "sd_checkpoint": "a1b2c3d4",
        "sd_checkpoint_name": "v1-5",
        "shape": 768,
        "vectors": 3,
    }
    assert api["skipped"]["xl_emb"]["shape"] == 2048

    db.set_expected_width(2048)
    assert list(db.embeddings) == ["xl_emb"]
    xl = db.get("xl_emb")
    assert xl.vectors_for("clip_l").shape == (4, 768) and xl.vectors_for("clip_g").shape == (4, 1280)


def test_vectors_are_the_stored_ones(tmp_path):
    vectors = torch.randn(2, 768)
    write_a1111_pt(tmp_path / "e" / "mine.pt", vectors)
    db = EmbeddingDatabase(tmp_path / "e", 768)
    assert torch.equal(db.get("mine").vectors_for(None), vectors)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_and_broken_files_are_refused_not_run(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "evil.pt").write_bytes(pickle.dumps({"string_to_param": {"*": _Exploit(str(marker))}}))
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    save_file({"a": torch.randn(768), "b": torch.randn(768)}, str(folder / "two_keys.safetensors"))
    write_a1111_pt(folder / "good.pt", torch.randn(1, 768))
    db = EmbeddingDatabase(folder, 768)
    assert not marker.exists()
    assert list(db.embeddings) == ["good"]
    assert sorted(p.name for p in db.errors) == ["broken.safetensors", "evil.pt", "two_keys.safetensors"]
    assert all(msg.startswith(path.name) for path, msg in db.errors.items())


def test_reload_sees_new_files_and_missing_folder_is_empty(tmp_path):
    assert EmbeddingDatabase(tmp_path / "none").listing() == []
    folder = tmp_path / "embeddings"
    folder.mkdir()
    db = EmbeddingDatabase(folder, 768)
    assert db.embeddings == {}
    write_a1111_pt(folder / "late.pt", torch.randn(1, 768))
    generation = db.generation
    db.reload()
    assert list(db.embeddings) == ["late"] and db.generation > generation


def test_refused_files_are_listed_with_the_reason_and_a_prompt_naming_one_is_warned(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "evil.pt").write_bytes(pickle.dumps({"string_to_param": {"*": _Exploit(str(marker))}}))
    write_a1111_pt(folder / "good.pt", torch.randn(1, 768))
    save_file({"emb_params": torch.randn(1, 1024)}, str(folder / "sd2_emb.safetensors"))
    db = EmbeddingDatabase(folder, 768)
    assert not marker.exists()
    api = db.api_listing()
    assert set(api["loaded"]) == {"good"} and set(api["skipped"]) == {"evil", "sd2_emb"}
    assert api["skipped"]["evil"]["vectors"] == 0 and "evil.pt: refused as unsafe" in api["skipped"]["evil"]["reason"]
    assert "sd2" in api["skipped"]["sd2_emb"]["reason"] and api["skipped"]["sd2_emb"]["shape"] == 1024
    rows = {row["name"]: row for row in db.listing()}
    assert rows["evil"]["status"] == "unusable" and "refused as unsafe" in rows["evil"]["reason"]
    assert rows["good"]["reason"] is None
    (warning,) = db.warnings_for(["a photo, (EVIL:1.2), good"])
    assert "'evil'" in warning and "evil.pt: refused as unsafe" in warning
    assert db.warnings_for(["good evildoer", "devil"]) == []  # only the name as a word


def test_png_with_an_a1111_embedding_chunk_is_read_and_plain_previews_are_passed_over(tmp_path):
    import base64
    import json

    from PIL import Image, PngImagePlugin

    vectors = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 10
    # Written by hand as A1111's image_embedding.embedding_to_b64 does: JSON with tensors as TORCHTENSOR lists.
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": {"TORCHTENSOR": vectors.tolist()}},
        "name": "purple-100",
        "step": 100,
        "sd_checkpoint": "abcdef0123",
        "sd_checkpoint_name": "tiny",
    }
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    Image.new("RGB", (8, 8)).save(tmp_path / "preview-with-data.png", pnginfo=info)
    Image.new("RGB", (8, 8)).save(tmp_path / "just-a-preview.png")
    database = EmbeddingDatabase(tmp_path)
    assert list(database.embeddings) == ["purple-100"] and not database.errors
    embedding = database.embeddings["purple-100"]
    assert embedding.step == 100 and embedding.sd_checkpoint_name == "tiny"
    assert torch.allclose(embedding.vectors_for(None), vectors)
