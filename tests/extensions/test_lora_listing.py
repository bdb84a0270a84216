"""Listing LoRA files as A1111's /sdapi/v1/loras does, hashes and the `Lora hashes` infotext."""

from __future__ import annotations

import hashlib

import torch

from sdstudio.extensions.lora import (
    LoraLibrary,
    LoraReport,
    format_lora_hashes,
    list_loras,
    lora_card,
    parse_lora_hashes,
)

from .conftest import write_lora


def test_listing_has_a1111_fields_alias_metadata_and_preview(lora_dir):
    write_lora(
        lora_dir,
        "style",
        {"lora_unet_x.lora_down.weight": torch.ones(2, 4)},
        {"ss_output_name": "my_style", "ss_network_dim": "2", "ss_tag_frequency": '{"10_style": {"red": 3}}'},
    )
    (lora_dir / "sub").mkdir()
    write_lora(lora_dir / "sub", "plain", {"lora_te_y.lora_down.weight": torch.ones(2, 4)})
    (lora_dir / "style.preview.png").write_bytes(b"png")
    library = LoraLibrary(lora_dir)
    listed = {item["name"]: item for item in list_loras(library)}
    assert set(listed) == {"style", "plain"}
    assert set(listed["style"]) == {"name", "alias", "path", "metadata"}
    assert listed["style"]["alias"] == "my_style" and listed["plain"]["alias"] == "plain"
    assert listed["style"]["metadata"]["ss_tag_frequency"] == {"10_style": {"red": 3}}  # JSON decoded, as A1111
    assert listed["plain"]["path"].endswith("sub/plain.safetensors")
    card = lora_card(library.find("my_style"))
    assert card["preview"].endswith("style.preview.png") and card["network_dim"] == "2" and card["sd_version"] == "SD1"


def test_short_hash_is_the_addnet_hash_and_ignores_metadata_edits(lora_dir):
    tensors = {"lora_unet_x.lora_down.weight": torch.arange(8.0).reshape(2, 4)}
    first = write_lora(lora_dir, "a", tensors, {"ss_output_name": "a"})
    write_lora(lora_dir, "b", tensors, {"ss_output_name": "something else entirely"})
    data = first.read_bytes()
    header = int.from_bytes(data[:8], "little")
    expected = hashlib.sha256(data[8 + header :]).hexdigest()[:12]
    library = LoraLibrary(lora_dir)
    assert library.find("a").shorthash == expected == library.find("b").shorthash
    assert library.find_by_shorthash(expected) is not None


def test_lora_hashes_infotext_round_trip():
    report = LoraReport(hashes={"detail:v2": "0123456789ab", "style,x": "ba9876543210"})
    value = report.infotext_params()["Lora hashes"]
    assert value == "detailv2: 0123456789ab, stylex: ba9876543210"  # A1111 drops ':' and ',' from names
    assert parse_lora_hashes(value) == {"detailv2": "0123456789ab", "stylex": "ba9876543210"}
    assert format_lora_hashes({}) == "" and LoraReport().infotext_params() == {}


def test_pasted_infotext_renames_loras_by_hash(lora_dir):
    write_lora(lora_dir, "local_name", {"lora_unet_x.lora_down.weight": torch.ones(2, 4)})
    library = LoraLibrary(lora_dir)
    short = library.find("local_name").shorthash
    prompt = "cat <lora:their_name:0.8> <lora:unknown:1>"
    assert library.restore_names(prompt, {"their_name": short}) == "cat <lora:local_name:0.8> <lora:unknown:1>"
