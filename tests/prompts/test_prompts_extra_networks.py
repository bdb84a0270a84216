"""Extra-network tags come out of the prompt with their arguments, as in A1111."""

from __future__ import annotations

import pytest

from sdstudio.errors import InvalidRequest
from sdstudio.prompts.extra_networks import (
    ExtraNetworkParams,
    extract_extra_networks,
    extract_extra_networks_batch,
    read_lora_tag,
)


def test_lora_tags_are_removed_and_collected():
    text, networks = extract_extra_networks("a cat <lora:fluffy:0.8>, <lora:style_v2:0.5:1.2> in a hat")
    assert text == "a cat ,  in a hat"  # A1111 removes only the tag, not the spaces around it
    assert [p.items for p in networks["lora"]] == [("fluffy", "0.8"), ("style_v2", "0.5", "1.2")]


def test_generic_tags_and_named_args():
    text, networks = extract_extra_networks("1girl, <hypernet:agm:1.1> <extrasupernet:master:12:13:14> <hypernet:ray>")
    assert text == "1girl,   "
    assert [p.items for p in networks["hypernet"]] == [("agm", "1.1"), ("ray",)]
    assert networks["extrasupernet"][0].positional == ("master", "12", "13", "14")
    params = ExtraNetworkParams(("x", "0.5", "unet=0.2", "a=b=c"))
    assert params.positional == ("x", "0.5", "a=b=c") and params.named == {"unet": "0.2"}


def test_text_without_tags_is_unchanged():
    for text in ["plain", "<not a tag>", "<lora:>", "a < b > c", "<:x>", "(x:1.2) [a:b:3]"]:
        assert extract_extra_networks(text) == (text, {})


def test_lora_multipliers():
    def lora(tag):
        return read_lora_tag(extract_extra_networks(tag)[1]["lora"][0])

    assert lora("<lora:a>") == lora("<lora:a:1>")
    assert (lora("<lora:a:0.7>").te_multiplier, lora("<lora:a:0.7>").unet_multiplier) == (0.7, 0.7)
    tag = lora("<lora:a:0.7:0.3>")
    assert (tag.name, tag.te_multiplier, tag.unet_multiplier, tag.dyn_dim) == ("a", 0.7, 0.3, None)
    tag = lora("<lora:a:0.5:te=0.1:unet=0.9:dyn=8>")
    assert (tag.te_multiplier, tag.unet_multiplier, tag.dyn_dim) == (0.1, 0.9, 8)
    assert lora("<lora:a:1:2:16>").dyn_dim == 16


def test_bad_lora_weight_is_a_user_error():
    params = extract_extra_networks("<lora:my_lora:strong>")[1]["lora"][0]
    with pytest.raises(InvalidRequest, match="my_lora") as error:
        read_lora_tag(params)
    assert error.value.field == "prompt"
    with pytest.raises(InvalidRequest):
        read_lora_tag(ExtraNetworkParams(("unet=1",)))


def test_batch_uses_first_prompts_networks():
    prompts, networks = extract_extra_networks_batch(["a <lora:x:1>", "b <lora:y:1>"])
    assert prompts == ["a ", "b "]
    assert [p.items[0] for p in networks["lora"]] == ["x"]
