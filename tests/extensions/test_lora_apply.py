"""Applying LoRA files per job: changes the image, weight 0 / untagged is the base bit-for-bit, combines, restores."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import tiny_clip

from sdstudio.extensions.lora import LoraActivation, LoraLibrary, activations_from_prompt
from sdstudio.models.ldm_names import ldm_unet_module_names

from .conftest import Probe, kohya_lora_tensors, module_path, write_lora


def manually_merged(unet, te, files: list[tuple[dict, float, float]]):
    """Copies of the models with every LoRA's dW * alpha/rank * multiplier added to the weights."""
    unet, te = copy.deepcopy(unet), copy.deepcopy(te)
    with torch.no_grad():
        for tensors, te_w, unet_w in files:
            for key, down in tensors.items():
                if not key.endswith(".lora_down.weight"):
                    continue
                base = key[: -len(".lora_down.weight")]
                up, alpha = tensors[base + ".lora_up.weight"], float(tensors[base + ".alpha"])
                if base.startswith("lora_unet_"):
                    model, name, w = unet, base[len("lora_unet_") :], unet_w
                else:
                    model, name, w = te, base[len("lora_te_") :], te_w
                path = module_path(model, name)
                weight = model.get_submodule(path).weight
                weight += (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * (alpha / down.shape[0]) * w
    return unet, te


@pytest.fixture
def library(lora_dir, models):
    unet, te, _ = models
    write_lora(lora_dir, "first", kohya_lora_tensors(unet, te, seed=1))
    write_lora(lora_dir, "second", kohya_lora_tensors(unet, te, seed=2, rank=2, alpha=1.0))
    return LoraLibrary(lora_dir)


@pytest.mark.parametrize("strategy", ["adapters", "merge"])
def test_kohya_lora_changes_output_and_is_removed_exactly(library, models, strategy):
    unet, te, probe = models
    library.strategy = strategy
    base_hidden, base_eps = probe.run()
    modules_before = [(n, type(m)) for n, m in unet.named_modules()]
    with library.apply(unet, [te], activations_from_prompt("a cat <lora:first:1>")) as report:
        hidden, eps = probe.run()
    assert report.applied == ["first"] and not report.warnings
    assert not torch.allclose(hidden, base_hidden) and not torch.allclose(eps, base_eps)
    after_hidden, after_eps = probe.run()
    assert torch.equal(after_hidden, base_hidden) and torch.equal(after_eps, base_eps)
    assert [(n, type(m)) for n, m in unet.named_modules()] == modules_before
    assert not hasattr(unet, "peft_config")


@pytest.mark.parametrize("strategy", ["adapters", "merge"])
def test_lora_matches_the_alpha_over_rank_times_weight_merge(library, models, lora_dir, strategy):
    unet, te, probe = models
    library.strategy = strategy
    tensors = kohya_lora_tensors(unet, te, seed=1)
    ref_unet, ref_te = manually_merged(unet, te, [(tensors, 0.5, 0.8)])
    expected = Probe(ref_unet, ref_te).run()
    with library.apply(unet, [te], [LoraActivation("first", te_multiplier=0.5, unet_multiplier=0.8)]):
        got = probe.run()
    assert torch.allclose(got[0], expected[0], atol=1e-5) and torch.allclose(got[1], expected[1], atol=1e-5)


def test_weight_zero_and_untagged_prompts_equal_the_base_bit_for_bit(library, models):
    unet, te, probe = models
    base = probe.run()
    with library.apply(unet, [te], activations_from_prompt("<lora:first:0> a cat")) as report:
        zero = probe.run()
    with library.apply(unet, [te], activations_from_prompt("a cat")):
        untagged = probe.run()
    assert torch.equal(zero[0], base[0]) and torch.equal(zero[1], base[1])
    assert torch.equal(untagged[0], base[0]) and torch.equal(untagged[1], base[1])
    assert report.hashes == {}  # nothing applied, nothing recorded in the infotext


def test_te_weight_zero_leaves_the_text_encoder_alone(library, models):
    unet, te, probe = models
    base = probe.run()
    with library.apply(unet, [te], activations_from_prompt("<lora:first:0:1>")):
        hidden, eps = probe.run()
    assert torch.equal(hidden, base[0]) and not torch.allclose(eps, base[1])


def test_two_loras_combine_as_the_sum_of_their_deltas(library, models):
    unet, te, probe = models
    first, second = kohya_lora_tensors(unet, te, seed=1), kohya_lora_tensors(unet, te, seed=2, rank=2, alpha=1.0)
    ref_unet, ref_te = manually_merged(unet, te, [(first, 0.7, 0.7), (second, -0.4, 1.2)])
    expected = Probe(ref_unet, ref_te).run()
    base = probe.run()
    with library.apply(unet, [te], activations_from_prompt("<lora:first:0.7> x <lora:second:-0.4:1.2>")) as report:
        got = probe.run()
    assert report.applied == ["first", "second"]
    assert torch.allclose(got[0], expected[0], atol=1e-5) and torch.allclose(got[1], expected[1], atol=1e-5)
    after = probe.run()
    assert torch.equal(after[0], base[0]) and torch.equal(after[1], base[1])


def test_unknown_name_is_a_warning_and_the_job_goes_on(library, models):
    unet, te, probe = models
    base = probe.run()
    with library.apply(unet, [te], activations_from_prompt("<lora:nosuch:1> <lora:first:1>")) as report:
        got = probe.run()
    assert report.applied == ["first"]
    assert any("nosuch" in w and "not found" in w for w in report.warnings)
    assert not torch.allclose(got[1], base[1])


def test_model_is_restored_when_the_job_fails(library, models):
    unet, te, probe = models
    base = probe.run()
    with pytest.raises(RuntimeError):
        with library.apply(unet, [te], activations_from_prompt("<lora:first:1>")):
            raise RuntimeError("sampler crashed")
    after = probe.run()
    assert torch.equal(after[0], base[0]) and torch.equal(after[1], base[1])


def test_ldm_named_kohya_keys_hit_the_same_modules(models, lora_dir):
    """SDXL-style files name UNet modules by their LDM path (lora_unet_input_blocks_1_1_proj_in)."""
    unet, te, probe = models
    tensors = kohya_lora_tensors(unet, te, seed=3)
    ldm = ldm_unet_module_names(unet)
    renamed = {}
    for key, value in tensors.items():
        if key.startswith("lora_unet_"):
            module, _, suffix = key.partition(".")
            path = next(p for p in ldm if p.replace(".", "_") == module[len("lora_unet_") :])
            key = "lora_unet_" + ldm[path].replace(".", "_") + "." + suffix
        renamed[key] = value
    assert any(k.startswith("lora_unet_input_blocks_1_1_proj_in") for k in renamed)
    write_lora(lora_dir, "diffusers_names", tensors)
    write_lora(lora_dir, "ldm_names", renamed)
    library = LoraLibrary(lora_dir)
    with library.apply(unet, [te], [LoraActivation("diffusers_names")]):
        expected = probe.run()
    with library.apply(unet, [te], [LoraActivation("ldm_names")]) as report:
        got = probe.run()
    assert not report.warnings
    assert torch.equal(got[1], expected[1])


def test_diffusers_peft_layout_equals_kohya_layout(models, lora_dir):
    unet, te, probe = models
    tensors = kohya_lora_tensors(unet, te, seed=4)
    peft_layout = {}
    for key, value in tensors.items():
        module, _, suffix = key.partition(".")
        if module.startswith("lora_unet_"):
            prefix, model, name = "unet.", unet, module[len("lora_unet_") :]
        else:
            prefix, model, name = "text_encoder.", te, module[len("lora_te_") :]
        path = module_path(model, name)
        if prefix == "text_encoder.":
            path = "text_model." + path  # diffusers files name CLIP modules from text_model down
        role = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight", "alpha": "alpha"}[suffix]
        peft_layout[f"{prefix}{path}.{role}"] = value
    write_lora(lora_dir, "kohya", tensors)
    write_lora(lora_dir, "peft", peft_layout)
    library = LoraLibrary(lora_dir)
    with library.apply(unet, [te], [LoraActivation("kohya")]):
        expected = probe.run()
    with library.apply(unet, [te], [LoraActivation("peft")]) as report:
        got = probe.run()
    assert not report.warnings
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_loha_and_lokr_are_applied_as_lycoris_defines_them(models, lora_dir):
    unet, te, probe = models
    g = torch.Generator().manual_seed(5)
    to_q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # Linear 32 -> 32
    conv = "down_blocks.1.resnets.0.conv1"  # Conv2d 32 -> 64, 3x3
    loha = {
        f"lora_unet_{to_q.replace('.', '_')}.hada_w1_a": torch.randn(32, 4, generator=g) * 0.3,
        f"lora_unet_{to_q.replace('.', '_')}.hada_w1_b": torch.randn(4, 32, generator=g) * 0.3,
        f"lora_unet_{to_q.replace('.', '_')}.hada_w2_a": torch.randn(32, 4, generator=g) * 0.3,
        f"lora_unet_{to_q.replace('.', '_')}.hada_w2_b": torch.randn(4, 32, generator=g) * 0.3,
        f"lora_unet_{to_q.replace('.', '_')}.alpha": torch.tensor(2.0),
    }
    lokr = {
        f"lora_unet_{conv.replace('.', '_')}.lokr_w1": torch.randn(8, 4, generator=g) * 0.3,
        f"lora_unet_{conv.replace('.', '_')}.lokr_w2": torch.randn(8, 8, 3, 3, generator=g) * 0.3,
    }
    write_lora(lora_dir, "loha", loha)
    write_lora(lora_dir, "lokr", lokr)
    t = {k.rsplit(".", 1)[1]: v for k, v in loha.items()}
    ref_unet = copy.deepcopy(unet)
    with torch.no_grad():
        ref_unet.get_submodule(to_q).weight += (
            (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) * (2.0 / 4) * 0.5
        )
        w1, w2 = (lokr[k] for k in lokr)
        ref_unet.get_submodule(conv).weight += torch.kron(w1[:, :, None, None], w2).reshape(64, 32, 3, 3)
    expected = Probe(ref_unet, te).run()
    base = probe.run()
    library = LoraLibrary(lora_dir)
    with library.apply(unet, [te], activations_from_prompt("<lora:loha:0.5><lora:lokr:1>")) as report:
        got = probe.run()
    assert not report.warnings and report.merged_modules == 2
    assert torch.allclose(got[1], expected[1], atol=1e-5)
    after = probe.run()
    assert torch.equal(after[1], base[1])


def test_unsupported_variants_are_reported_not_guessed(models, lora_dir):
    unet, te, probe = models
    tensors = kohya_lora_tensors(unet, te, seed=6)
    tensors["lora_unet_down_blocks_1_resnets_0_conv1.lora_mid.weight"] = torch.zeros(4, 4, 3, 3)
    tensors["lora_unet_no_such_block.lora_down.weight"] = torch.zeros(4, 8)
    tensors["lora_unet_no_such_block.lora_up.weight"] = torch.zeros(8, 4)
    write_lora(lora_dir, "odd", tensors)
    with LoraLibrary(lora_dir).apply(unet, [te], [LoraActivation("odd")]) as report:
        pass
    assert any("lora_mid" in w for w in report.warnings)
    assert any("match no module" in w for w in report.warnings)


def test_text_encoder_change_clears_the_prompt_cache(library, models):
    """The prompt layer caches encodings; a LoRA must not leave a stale one for the next job."""
    from sdstudio.prompts.conditioning import PromptEncoder

    unet, te, _ = models
    encoder = PromptEncoder([te], architecture="sd1")
    base = encoder.encode(["a cat"]).hidden
    with library.apply(
        unet, [te], activations_from_prompt("a cat <lora:first:1>"), on_text_encoders_changed=encoder.clear_cache
    ):
        with_lora = encoder.encode(["a cat"]).hidden
    after = encoder.encode(["a cat"]).hidden
    assert not torch.allclose(with_lora, base)
    assert torch.equal(after, base)


def test_pt_files_load_through_the_safe_path(models, lora_dir):
    unet, te, probe = models
    tensors = kohya_lora_tensors(unet, te, seed=1)
    lora_dir.mkdir(parents=True)
    torch.save(tensors, lora_dir / "pickled.pt")
    write_lora(lora_dir, "same", tensors)
    library = LoraLibrary(lora_dir)
    with library.apply(unet, [te], [LoraActivation("same")]):
        expected = probe.run()
    with library.apply(unet, [te], [LoraActivation("pickled")]) as report:
        got = probe.run()
    assert report.applied == ["pickled"]
    assert torch.equal(got[1], expected[1])


def test_sdxl_te1_te2_prefixes_address_the_two_text_encoders(lora_dir):
    clip_l = tiny_clip(seed=3)
    clip_g = tiny_clip(seed=4, hidden=48, projection=24)
    g = torch.Generator().manual_seed(9)
    tensors = {}
    for prefix, width in (("lora_te1_", 32), ("lora_te2_", 48)):
        key = f"{prefix}text_model_encoder_layers_1_self_attn_v_proj"
        tensors[f"{key}.lora_down.weight"] = torch.randn(2, width, generator=g)
        tensors[f"{key}.lora_up.weight"] = torch.randn(width, 2, generator=g)
    write_lora(lora_dir, "xl", tensors)
    ids = torch.tensor([[49406, 320, 49407] + [49407] * 74])
    with torch.no_grad():
        base_l, base_g = clip_l(ids)[0], clip_g(ids).text_embeds
        with LoraLibrary(lora_dir).apply(None, [clip_l, clip_g], [LoraActivation("xl")]) as report:
            lora_l, lora_g = clip_l(ids)[0], clip_g(ids).text_embeds
        after_l, after_g = clip_l(ids)[0], clip_g(ids).text_embeds
    assert not report.warnings and report.adapter_modules == 2
    assert not torch.allclose(lora_l, base_l) and not torch.allclose(lora_g, base_g)
    assert torch.equal(after_l, base_l) and torch.equal(after_g, base_g)
