"""Conditioning on tiny text encoders: chunks, BREAK, weights, clip skip, embeddings, schedules, AND."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.errors import InvalidRequest
from sdstudio.prompts import tokenize
from sdstudio.prompts.conditioning import (
    MAX_SCHEDULED_TEXTS,
    PromptConditioner,
    PromptEncoder,
    build_scheduled_conditioning,
)
from sdstudio.prompts.embeddings import EmbeddingDatabase

BOS, EOS, COMMA = 49406, 49407, 267
CAT, DOG = tokenize("cat")[0], tokenize("dog")[0]


def words(word: str, count: int) -> str:
    return " ".join([word] * count)


def direct_hidden(model, ids, layer=-1, norm=False):
    """What the text model itself gives for these ids (no sdstudio code involved)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    hidden = out.hidden_states[layer]
    return model.final_layer_norm(hidden) if norm else (out.last_hidden_state if layer == -1 else hidden)


def test_single_token_prompt_is_one_padded_chunk(clip_l):
    encoder = PromptEncoder([clip_l])
    assert [c.tokens for c in encoder.chunks("cat")] == [[BOS, CAT] + [EOS] * 75]
    result = encoder.encode(["cat"])
    assert result.hidden.shape == (1, 77, 32) and result.pooled is None
    assert torch.allclose(result.hidden[0], direct_hidden(clip_l, [BOS, CAT] + [EOS] * 75)[0])


def test_chunk_counts_at_the_boundaries(clip_l):
    encoder = PromptEncoder([clip_l])
    for tokens, expected_chunks in [(1, 1), (75, 1), (76, 2), (150, 2), (151, 3)]:
        text = words("cat", tokens)
        chunks = encoder.chunks(text)
        assert len(chunks) == expected_chunks, tokens
        assert all(len(c.tokens) == 77 and c.tokens[0] == BOS and c.tokens[-1] == EOS for c in chunks)
        assert sum(t == CAT for c in chunks for t in c.tokens) == tokens
        assert encoder.encode([text]).hidden.shape == (1, 77 * expected_chunks, 32)
        assert encoder.token_count(text) == (tokens, 75 * expected_chunks)
    # Each chunk is encoded on its own: the second chunk of 76 cats is the encoding of "cat".
    long = encoder.encode([words("cat", 76)]).hidden
    assert torch.allclose(long[:, 77:], encoder.encode(["cat"]).hidden)


def test_comma_near_the_end_moves_the_phrase_to_the_next_chunk(clip_l):
    encoder = PromptEncoder([clip_l])
    first, second = encoder.chunks(words("cat", 70) + ", " + words("dog", 10))
    assert first.tokens == [BOS] + [CAT] * 70 + [COMMA] + [EOS] * 5
    assert second.tokens == [BOS] + [DOG] * 10 + [EOS] * 66
    # A comma further back than 20 tokens is not used: the chunk is simply cut at 75.
    first, second = encoder.chunks(words("cat", 50) + ", " + words("dog", 30))
    assert first.tokens == [BOS] + [CAT] * 50 + [COMMA] + [DOG] * 24 + [EOS]
    assert second.tokens == [BOS] + [DOG] * 6 + [EOS] * 70


def test_break_starts_a_new_chunk(clip_l):
    encoder = PromptEncoder([clip_l])
    assert [c.tokens[:3] for c in encoder.chunks("cat BREAK dog")] == [[BOS, CAT, EOS], [BOS, DOG, EOS]]
    broken = encoder.encode(["cat BREAK dog"]).hidden
    assert torch.equal(broken[:, :77], encoder.encode(["cat"]).hidden)
    assert torch.equal(broken[:, 77:], encoder.encode(["dog"]).hidden)


def test_weights_scale_tokens_and_the_mean_is_restored(clip_l):
    encoder = PromptEncoder([clip_l])
    plain = encoder.encode(["cat dog"]).hidden
    weighted = encoder.encode(["(cat:1.5) dog"]).hidden
    assert not torch.allclose(plain, weighted)
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-6)
    ratio = weighted[0] / plain[0]  # = multiplier * (original mean / new mean), the same factor everywhere
    factor = ratio[2].mean()
    assert torch.allclose(ratio[1], torch.full_like(ratio[1], 1.5 * factor.item()), rtol=1e-4)
    assert torch.allclose(ratio[[0, 2, 3, 76]], torch.full_like(ratio[[0, 2, 3, 76]], factor.item()), rtol=1e-4)
    assert encoder.chunks("[cat] dog")[0].multipliers[:4] == [1.0, 1 / 1.1, 1.0, 1.0]


def test_clip_skip_uses_an_earlier_layer_then_the_final_norm(clip_l):
    ids = [BOS, CAT, DOG] + [EOS] * 74
    skip1 = PromptEncoder([clip_l], clip_skip=1).encode(["cat dog"]).hidden[0]
    skip2 = PromptEncoder([clip_l], clip_skip=2).encode(["cat dog"]).hidden[0]
    assert torch.allclose(skip1, direct_hidden(clip_l, ids)[0], atol=1e-6)
    assert torch.allclose(skip2, direct_hidden(clip_l, ids, layer=-2, norm=True)[0], atol=1e-6)
    assert not torch.allclose(skip1, skip2)
    # clip_skip may also be given per call, overriding the encoder's default.
    assert torch.equal(PromptEncoder([clip_l]).encode(["cat dog"], clip_skip=2).hidden[0], skip2)


def embedding_folder(tmp_path, **files):
    folder = tmp_path / "embeddings"
    folder.mkdir(exist_ok=True)
    for name, tensors in files.items():
        save_file(tensors, str(folder / f"{name}.safetensors"))
    return folder


def test_embedding_vectors_go_exactly_where_its_name_was(clip_l, tmp_path):
    table = clip_l.get_input_embeddings().weight.detach()
    house = tokenize("house")[0]
    # An embedding whose two vectors are the token vectors of "dog" and "house" must encode
    # exactly like those two words: same positions, same values.
    folder = embedding_folder(
        tmp_path, mystyle={"emb_params": table[[DOG, house]].clone()}, other={"emb_params": torch.randn(2, 768)}
    )
    db = EmbeddingDatabase(folder, expected_width=32)
    encoder = PromptEncoder([clip_l], embeddings=db)
    assert encoder.chunks("a mystyle cat")[0].tokens[:6] == [BOS, tokenize("a")[0], 0, 0, CAT, EOS]
    with_embedding = encoder.encode(["a mystyle cat"])
    assert torch.allclose(with_embedding.hidden, encoder.encode(["a dog house cat"]).hidden, atol=1e-6)
    assert with_embedding.used_embeddings == ("mystyle",)
    assert "other" in db.skipped  # 768-wide: for SD1, not this 32-wide model
    # Without the database the name is ordinary text.
    assert PromptEncoder([clip_l]).chunks("a mystyle cat")[0].tokens[2:4] != [0, 0]


def test_embedding_that_does_not_fit_moves_to_the_next_chunk(clip_l, tmp_path):
    folder = embedding_folder(tmp_path, triple={"emb_params": torch.randn(3, 32)})
    encoder = PromptEncoder([clip_l], embeddings=EmbeddingDatabase(folder, 32))
    first, second = encoder.chunks(words("cat", 73) + " triple")
    assert first.tokens == [BOS] + [CAT] * 73 + [EOS] * 3
    assert second.tokens[:5] == [BOS, 0, 0, 0, EOS] and [o for o, _ in second.fixes] == [0]


def test_weight_applies_to_embedding_vectors(clip_l, tmp_path):
    folder = embedding_folder(tmp_path, triple={"emb_params": torch.randn(3, 32)})
    encoder = PromptEncoder([clip_l], embeddings=EmbeddingDatabase(folder, 32))
    assert encoder.chunks("(triple:1.3) cat")[0].multipliers[:6] == [1.0, 1.3, 1.3, 1.3, 1.0, 1.0]


def test_negative_prompt_with_fewer_chunks_is_padded_with_empty_encodings(clip_l):
    encoder = PromptEncoder([clip_l])
    cond = build_scheduled_conditioning(encoder, [words("cat", 151)], steps=10, negative_prompts=["ugly"])
    c, conds_list = cond.at_step(0)
    u = cond.uncond_at_step(0)
    assert c.shape == u.shape == (1, 231, 32) and conds_list == [[(0, 1.0)]]
    empty = encoder.encode([""]).hidden
    assert torch.equal(u[:, :77], encoder.encode(["ugly"]).hidden)
    assert torch.equal(u[:, 77:154], empty) and torch.equal(u[:, 154:], empty)
    # And the other way round: a long negative pads the prompt.
    cond = build_scheduled_conditioning(encoder, ["cat"], steps=10, negative_prompts=[words("dog", 80)])
    assert cond.at_step(0)[0].shape == (1, 154, 32)
    assert torch.equal(cond.at_step(0)[0][:, 77:], empty)


def test_and_composition_gives_weighted_rows(clip_l):
    encoder = PromptEncoder([clip_l])
    cond = build_scheduled_conditioning(encoder, ["cat AND dog :0.5", "cat"], steps=10, negative_prompts=["", ""])
    c, conds_list = cond.at_step(3)
    assert conds_list == [[(0, 1.0), (1, 0.5)], [(2, 1.0)]]
    assert torch.equal(c[0], encoder.encode(["cat"]).hidden[0])
    assert torch.equal(c[1], encoder.encode([" dog"]).hidden[0])
    assert torch.equal(c[2], c[0])
    assert cond.uncond_at_step(3).shape == (2, 77, 32)


def test_schedule_switches_at_the_right_step(clip_l):
    encoder = PromptEncoder([clip_l])
    cond = build_scheduled_conditioning(encoder, ["a [cat:dog:5]"], steps=10)
    both = encoder.encode(["a cat", "a dog"]).hidden
    # A1111: the text ending at step 5 is used while the sampler's step counter is <= 5.
    for step in range(10):
        expected = both[0] if step <= 5 else both[1]
        assert torch.equal(cond.at_step(step)[0][0], expected), step
    alternating = build_scheduled_conditioning(encoder, ["[cat|dog]"], steps=4)
    rows = [alternating.at_step(s)[0][0] for s in range(4)]
    cat, dog = encoder.encode(["cat", "dog", "cat", "dog"]).hidden[:2]
    assert [torch.equal(r, cat) for r in rows] == [True, True, False, True]
    assert torch.equal(rows[2], dog)
    negative = build_scheduled_conditioning(encoder, ["x"], steps=10, negative_prompts=["[ugly:blurry:0.5]"])
    ugly, blurry = encoder.encode(["ugly", "blurry"]).hidden
    assert torch.equal(negative.uncond_at_step(2)[0], ugly) and torch.equal(negative.uncond_at_step(7)[0], blurry)


def test_identical_texts_are_encoded_once(clip_l):
    calls = []
    handle = clip_l.register_forward_hook(lambda *args: calls.append(1))
    try:
        encoder = PromptEncoder([clip_l])
        build_scheduled_conditioning(encoder, ["cat", "cat", "cat AND dog"], steps=10, negative_prompts=["bad"] * 3)
        first = len(calls)
        conditioner = PromptConditioner(encoder)
        conditioner.encode(["cat"], ["bad"], 20, 1, 512, 512)
    finally:
        handle.remove()
    assert first == 4  # "cat", " dog", "bad" and the empty prompt used for padding
    assert len(calls) == first  # a second job with the same texts reuses the encodings


def test_extra_network_tags_do_not_reach_the_encoder(clip_l):
    encoder = PromptEncoder([clip_l])
    cond = build_scheduled_conditioning(encoder, ["<lora:style:0.8>cat"], steps=10)
    assert torch.equal(cond.at_step(0)[0][0], encoder.encode(["cat"]).hidden[0])


def test_sd2_pads_with_zero_after_eos_and_uses_the_penultimate_layer(clip_l):
    seen = []
    handle = clip_l.get_input_embeddings().register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].tolist()))
    try:
        hidden = PromptEncoder([clip_l], architecture="sd2", clip_skip=3).encode(["cat"]).hidden
    finally:
        handle.remove()
    ids = [BOS, CAT, EOS] + [0] * 74
    assert seen == [[ids]]
    assert torch.allclose(hidden[0], direct_hidden(clip_l, ids, layer=-2, norm=True)[0], atol=1e-6)


def test_sdxl_two_encoders_pooled_and_size_conditioning(clip_l, clip_g, tmp_path):
    folder = embedding_folder(
        tmp_path,
        xl={"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 48)},
        sd1={"emb_params": torch.randn(1, 32)},
    )
    db = EmbeddingDatabase(folder, expected_width=32 + 48)
    encoder = PromptEncoder([clip_l, clip_g], architecture="sdxl", embeddings=db)
    result = encoder.encode(["a xl cat"])
    assert result.hidden.shape == (1, 77, 80) and result.pooled.shape == (1, 24)
    assert result.used_embeddings == ("xl",) and list(db.skipped) == ["sd1"]
    ids_l = [BOS, tokenize("a")[0], 0, 0, CAT] + [EOS] * 72
    assert encoder.chunks("a xl cat", 0)[0].tokens == ids_l
    # CLIP-L features: the penultimate layer, no final norm (with the embedding's clip_l vectors).
    plain = encoder.encode(["a cat"])
    with torch.no_grad():
        direct = clip_l(input_ids=torch.tensor([[BOS, tokenize("a")[0], CAT] + [EOS] * 74]), output_hidden_states=True)
        g_ids = torch.tensor([[BOS, tokenize("a")[0], CAT, EOS] + [0] * 73])
        direct_g = clip_g(input_ids=g_ids, output_hidden_states=True)
    assert torch.allclose(plain.hidden[0, :, :32], direct.hidden_states[-2][0], atol=1e-6)
    assert torch.allclose(plain.hidden[0, :, 32:], direct_g.hidden_states[-2][0], atol=1e-6)
    assert torch.allclose(plain.pooled[0], direct_g.text_embeds[0], atol=1e-6)

    cond = build_scheduled_conditioning(
        encoder, ["a cat", "a dog"], steps=10, negative_prompts=["", ""], width=832, height=1216
    )
    uncond = cond.uncond_at_step(0)
    assert torch.count_nonzero(uncond) == 0  # empty SDXL negative prompt -> zeros (A1111, diffusers)
    kwargs = cond.unet_kwargs(0, [0, 1, 0, 1])
    added = kwargs["added_cond_kwargs"]
    assert added["text_embeds"].shape == (4, 24) and torch.count_nonzero(added["text_embeds"][2:]) == 0
    assert added["time_ids"].tolist() == [[1216.0, 832.0, 0.0, 0.0, 1216.0, 832.0]] * 4


def test_sd1_conditioning_has_no_unet_kwargs(clip_l):
    cond = PromptConditioner(PromptEncoder([clip_l])).encode(["cat"], [""], 10, 1, 64, 64)
    assert cond.unet_kwargs is None


class Interrupted(Exception):
    pass


def test_cancel_is_checked_before_each_schedule_encoding(clip_l):
    encoder = PromptEncoder([clip_l])
    checks = []

    def check_cancelled():
        checks.append(len(encoder._cache))
        if len(checks) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        build_scheduled_conditioning(
            encoder, ["a AND b AND c AND d"], steps=10, negative_prompts=["x"], check_cancelled=check_cancelled
        )
    assert checks == [0, 1, 2]  # two sub-prompts encoded, then the job stopped: "c", "d" and "x" never were


def test_schedules_past_the_encoding_bounds_are_refused_naming_the_field(clip_l):
    encoder = PromptEncoder([clip_l])
    # [a|b] over 1000 steps is 1000 texts; five AND parts of it are more than MAX_SCHEDULED_TEXTS.
    alternating = " AND ".join(f"[a{i}|b]" for i in range(5))
    with pytest.raises(InvalidRequest, match=f"at least 5000 texts.*may have {MAX_SCHEDULED_TEXTS} texts") as refused:
        build_scheduled_conditioning(encoder, [alternating], steps=1000)
    assert refused.value.field == "prompt" and encoder._cache == {}  # refused before encoding anything
    with pytest.raises(InvalidRequest) as refused:  # negative prompts take no AND: five different ones
        negatives = [f"[a{i}|b]" for i in range(5)]
        build_scheduled_conditioning(encoder, ["cat"] * 5, steps=1000, negative_prompts=negatives)
    assert refused.value.field == "negative_prompt"
    long_text = "cat " * 2500 + "[a|b]"
    with pytest.raises(InvalidRequest, match="characters"):
        build_scheduled_conditioning(encoder, [long_text], steps=150)
    with pytest.raises(InvalidRequest, match="brackets open at once") as refused:
        build_scheduled_conditioning(encoder, ["cat"], steps=10, negative_prompts=["(" * 101 + "cat"])
    assert refused.value.field == "negative_prompt"
    # The same alternation over 20 steps is well inside the bounds.
    assert build_scheduled_conditioning(encoder, [alternating], steps=20).at_step(0)[0].shape == (5, 77, 32)
