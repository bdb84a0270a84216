"""A1111 hypernetworks: the `.pt` format by hand, `<hypernet:NAME:W>` on the bundled model, safety, creating."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from malicious_files import write_malicious

from sdstudio.errors import InvalidRequest, ModelLoadError
from sdstudio.extensions.hypernetwork import (
    HypernetworkLibrary,
    create_hypernetwork,
    hypernetworks_applied,
    list_hypernetworks,
    load_hypernetwork_file,
)

# A1111's layout for layer_structure [1, 2, 1], relu, layer norm, dropout [0, 0.3, 0], activate_output False:
# Linear, ReLU, LayerNorm, Dropout | Linear, LayerNorm  -> weights at 0, 2, 4, 5.
A1111_KEYS = [f"linear.{i}.{p}" for i in (0, 2, 4, 5) for p in ("weight", "bias")]


def a1111_module_state(width: int, generator: torch.Generator, scale: float = 0.05) -> OrderedDict:
    """One k or v module's weights as A1111 saves them for the layout above."""
    shapes = {
        "linear.0.weight": (2 * width, width),
        "linear.0.bias": (2 * width,),
        "linear.2.weight": (2 * width,),
        "linear.2.bias": (2 * width,),
        "linear.4.weight": (width, 2 * width),
        "linear.4.bias": (width,),
        "linear.5.weight": (width,),
        "linear.5.bias": (width,),
    }
    return OrderedDict(
        (key, torch.randn(*shape, generator=generator) * scale + (key == "linear.2.weight"))
        for key, shape in shapes.items()
    )


def a1111_file(widths, seed: int = 0, scale: float = 0.05, name: str = "hand") -> dict:
    """The dict A1111's Hypernetwork.save pickles."""
    g = torch.Generator().manual_seed(seed)
    data: dict = {width: (a1111_module_state(width, g, scale), a1111_module_state(width, g, scale)) for width in widths}
    data.update(
        step=120,
        name=name,
        layer_structure=[1, 2, 1],
        activation_func="relu",
        is_layer_norm=True,
        weight_initialization="Normal",
        sd_checkpoint="0123456789",
        sd_checkpoint_name="v1-5-pruned-emaonly",
        activate_output=False,
        use_dropout=True,
        dropout_structure=[0, 0.3, 0],
        last_layer_dropout=True,
        optional_info=None,
    )
    return data


def manual_forward(state: OrderedDict, x: torch.Tensor, multiplier: float) -> torch.Tensor:
    """What A1111's module computes in eval mode, written out: x + LN(L2(LN(relu(L1 x)))) * m."""
    f = torch.nn.functional
    h = f.linear(x, state["linear.0.weight"], state["linear.0.bias"]).relu()
    h = f.layer_norm(h, h.shape[-1:], state["linear.2.weight"], state["linear.2.bias"])
    h = f.linear(h, state["linear.4.weight"], state["linear.4.bias"])
    h = f.layer_norm(h, h.shape[-1:], state["linear.5.weight"], state["linear.5.bias"])
    return x + h * multiplier


def test_a1111_file_loads_computes_as_a1111_and_round_trips(tmp_path):
    original = a1111_file([768, 320])
    torch.save(original, tmp_path / "hand.pt")
    net = load_hypernetwork_file(tmp_path / "hand.pt")
    assert list(net.layers) == [768, 320] and net.step == 120 and net.name == "hand"
    assert net.structure.dropout_structure == (0, 0.3, 0) and net.structure.activation_func == "relu"
    k_module = net.layers[320][0]
    assert list(k_module.state_dict()) == A1111_KEYS
    x = torch.randn(2, 5, 320)
    assert torch.allclose(k_module(x, 0.7), manual_forward(original[320][0], x, 0.7), atol=1e-5)

    net.save(tmp_path / "again.pt")
    saved = torch.load(tmp_path / "again.pt", weights_only=True)
    assert set(saved) == set(original)
    for width in (768, 320):
        for ours, theirs in zip(saved[width], original[width], strict=True):
            assert list(ours) == list(theirs)
            assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    assert {k: v for k, v in saved.items() if not isinstance(k, int)} == {
        k: v for k, v in original.items() if not isinstance(k, int)
    }


def test_the_first_hypernetworks_keys_and_missing_fields_load_as_a1111(tmp_path):
    """linear1/linear2 keys are renamed; no layer_structure means 1, 2, 1; no activation."""
    g = torch.Generator().manual_seed(1)

    def old_state():
        return {
            "linear1.weight": torch.randn(16, 8, generator=g),
            "linear1.bias": torch.randn(16, generator=g),
            "linear2.weight": torch.randn(8, 16, generator=g),
            "linear2.bias": torch.randn(8, generator=g),
        }

    torch.save({8: (old_state(), old_state())}, tmp_path / "old.pt")
    net = load_hypernetwork_file(tmp_path / "old.pt")
    assert net.name == "old" and net.structure.layer_structure == (1, 2, 1)
    assert list(net.layers[8][1].state_dict()) == [
        "linear.0.weight",
        "linear.0.bias",
        "linear.1.weight",
        "linear.1.bias",
    ]


def test_weights_that_do_not_fit_the_structure_are_a_load_error_naming_the_width(tmp_path):
    data = a1111_file([64])
    data["layer_structure"] = [1, 3, 1]
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="bad.pt: width 64"):
        load_hypernetwork_file(tmp_path / "bad.pt")


# -- on the bundled model -----------------------------------------------------------------


def generate(engine, prompt: str):
    from sdstudio.engine.request import Txt2ImgRequest

    result = engine.txt2img(
        Txt2ImgRequest(
            prompt=prompt,
            seed=7,
            steps=3,
            width=64,
            height=64,
            sampler_name="Euler",
            do_not_save_samples=True,
            do_not_save_grid=True,
        )
    )
    return np.asarray(result.images[0]), result


@pytest.fixture
def app(data_dir):
    from sdstudio.app import open_app

    return open_app(data_dir)


def bundled_widths(app) -> list[int]:
    from sdstudio.extensions.hypernetwork.library import attention_widths

    return attention_widths(app.engine.model_source(None).unet)


def test_hypernet_tag_changes_the_image_weight_0_and_the_next_job_are_the_base_image(app):
    torch.save(a1111_file(bundled_widths(app), scale=0.3), app.paths.folder("hypernetwork") / "shift.pt")
    base, _ = generate(app.engine, "a red circle")
    tagged, result = generate(app.engine, "a red circle <hypernet:shift:1>")
    zero, _ = generate(app.engine, "a red circle <hypernet:shift:0>")
    after, _ = generate(app.engine, "a red circle")
    assert np.abs(tagged.astype(int) - base.astype(int)).mean() > 1
    assert np.array_equal(zero, base) and np.array_equal(after, base)
    assert not result.warnings
    assert "<hypernet:shift:1>" in result.infotexts[0] and "Hypernet" not in result.infotexts[0].split("\n", 1)[1]


def test_hooks_are_removed_exactly_and_the_unet_output_is_unchanged(app):
    unet = app.engine.model_source(None).unet
    path = app.paths.folder("hypernetwork") / "shift.pt"
    torch.save(a1111_file(bundled_widths(app), scale=0.3), path)
    g = torch.Generator().manual_seed(0)
    latents, context = (
        torch.randn(1, 4, 8, 8, generator=g),
        torch.randn(1, 77, unet.config.cross_attention_dim, generator=g),
    )

    def run():
        with torch.no_grad():
            return unet(latents, torch.tensor([500]), encoder_hidden_states=context).sample

    before = run()
    net = load_hypernetwork_file(path)
    with hypernetworks_applied(unet, [(net, 1.0), (net, 0.5)]) as applied:
        during = run()
    assert len(applied.hooked) == 2 * 2 * 14  # two networks, k and v, 14 attention blocks
    assert not torch.equal(during, before)
    assert torch.equal(run(), before)
    assert not any(module._forward_pre_hooks for module in unet.modules())


def test_unknown_names_and_mismatched_widths_are_warnings(app):
    torch.save(a1111_file([768, 320]), app.paths.folder("hypernetwork") / "sd15.pt")
    base, _ = generate(app.engine, "a red circle")
    image, result = generate(app.engine, "a red circle <hypernet:sd15:1> <hypernet:missing:1> <hypernet:/etc/passwd:1>")
    assert np.array_equal(image, base)
    text = " | ".join(result.warnings)
    assert "'sd15' has no layer for this model's attention widths" in text
    assert "'missing' not found" in text and "'/etc/passwd' not found" in text


@pytest.mark.parametrize("form", ["zip", "unscannable"])
def test_a_malicious_hypernetwork_is_refused_and_nothing_runs(app, tmp_path, form):
    marker = tmp_path / "pwned"
    write_malicious(app.paths.folder("hypernetwork") / "evil.pt", marker, form)
    base, _ = generate(app.engine, "a red circle")
    image, result = generate(app.engine, "a red circle <hypernet:evil:1>")
    assert not marker.exists()
    assert np.array_equal(image, base)
    assert any("evil" in w and "refused as unsafe" in w for w in result.warnings), result.warnings


# -- creating and listing --------------------------------------------------------------------


def test_create_writes_a1111s_file_and_it_is_listed(tmp_path):
    folder = tmp_path / "hypernetworks"
    path = create_hypernetwork(
        folder,
        "my net!",
        enable_sizes=["768", 320],
        layer_structure="1, 1.5, 1",
        activation_func="swish",
        weight_init="XavierNormal",
        add_layer_norm=True,
        use_dropout=True,
        dropout_structure="0, 0.1, 0",
    )
    assert path == folder / "my net.pt"  # A1111 drops characters other than letters, digits and ._-
    saved = torch.load(path, weights_only=True)
    assert [k for k in saved if isinstance(k, int)] == [768, 320]
    # Linear, Hardswish, LayerNorm, Dropout | Linear, LayerNorm
    assert list(saved[320][0]) == [f"linear.{i}.{p}" for i in (0, 2, 4, 5) for p in ("weight", "bias")]
    assert saved[320][0]["linear.0.weight"].shape == (480, 320)
    assert saved["layer_structure"] == [1, 1.5, 1] and saved["dropout_structure"] == [0, 0.1, 0]
    assert saved["activation_func"] == "swish" and saved["is_layer_norm"] and saved["use_dropout"]
    assert saved["weight_initialization"] == "XavierNormal" and saved["step"] == 0 and saved["name"] == "my net"
    assert saved["last_layer_dropout"] and not saved["activate_output"]  # A1111: dropout before the last Linear
    assert list_hypernetworks(HypernetworkLibrary(folder)) == [{"name": "my net", "path": str(path)}]
    with pytest.raises(InvalidRequest, match="name: my net.pt already exists"):
        create_hypernetwork(folder, "my net")
    assert create_hypernetwork(folder, "my net", overwrite_old=True) == path


def test_create_defaults_are_a1111s_form_and_bad_fields_are_named(tmp_path):
    path = create_hypernetwork(tmp_path, "plain")
    saved = torch.load(path, weights_only=True)
    assert [k for k in saved if isinstance(k, int)] == [768, 320, 640, 1280]
    assert saved["layer_structure"] == [1, 2, 1] and saved["activation_func"] == "linear"
    assert saved["dropout_structure"] == [0, 0, 0] and not saved["use_dropout"]
    assert list(saved[768][0]) == ["linear.0.weight", "linear.0.bias", "linear.1.weight", "linear.1.bias"]
    for fields, named in [
        ({"name": "???"}, "name"),
        ({"name": "a", "layer_structure": "2, 1"}, "layer_structure"),
        ({"name": "a", "layer_structure": "1, x, 1"}, "layer_structure"),
        ({"name": "a", "activation_func": "nonsense"}, "activation_func"),
        ({"name": "a", "weight_init": "Zeros"}, "weight_init"),
        ({"name": "a", "enable_sizes": ["big"]}, "enable_sizes"),
        ({"name": "a", "use_dropout": True, "dropout_structure": "0, 1.5, 0"}, "dropout_structure"),
        ({"name": "a", "use_dropout": True, "dropout_structure": "0, 0.3, 0.3, 0"}, "dropout_structure"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            create_hypernetwork(tmp_path, **fields)
        assert caught.value.field == named
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["plain.pt"]


def test_a_structure_too_big_to_hold_is_refused_before_anything_is_allocated(tmp_path):
    with pytest.raises(InvalidRequest, match="layer_structure: .* weights") as caught:
        create_hypernetwork(tmp_path, "huge", enable_sizes=[8192], layer_structure="1, 64, 64, 1")
    assert caught.value.field == "layer_structure"
    with pytest.raises(InvalidRequest, match="no units"):
        create_hypernetwork(tmp_path, "thin", enable_sizes=[64], layer_structure=[1, 0.001, 1])
    assert not list(tmp_path.iterdir())


def test_a_half_precision_model_gets_its_own_dtype_back_and_hypernetworks_chain_in_order():
    """As A1111 (cond_cast_float / cond_cast_unet): the hypernetwork runs in float32, the projection in the model's."""
    from sdstudio.extensions.hypernetwork import Hypernetwork, HypernetworkStructure

    attention = torch.nn.Module()
    attention.to_k, attention.to_v = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    block = torch.nn.Sequential()
    block.add_module("attn2", attention)
    block.to(torch.bfloat16)
    structure = HypernetworkStructure(layer_structure=(1, 2, 1), activation_func="relu", weight_init="XavierNormal")
    first, second = (Hypernetwork.new(n, [16], structure) for n in ("first", "second"))
    context = torch.randn(1, 4, 16).to(torch.bfloat16)
    with hypernetworks_applied(block, [(first, 0.5), (second, 2.0)]) as applied, torch.no_grad():
        keys = attention.to_k(context)
        values = attention.to_v(context)
    assert len(applied.hooked) == 4 and keys.dtype == torch.bfloat16
    with torch.no_grad():
        k_context = second.layers[16][0](first.layers[16][0](context.float(), 0.5).bfloat16().float(), 2.0)
        v_context = second.layers[16][1](first.layers[16][1](context.float(), 0.5).bfloat16().float(), 2.0)
        assert torch.equal(keys, attention.to_k(k_context.bfloat16()))
        assert torch.equal(values, attention.to_v(v_context.bfloat16()))
