"""ControlNet and T2I-Adapter files: both layouts load offline and run; hostile pickles refused; lenient lookup."""

from __future__ import annotations

import pytest
import torch
from diffusers import ControlNetModel, T2IAdapter
from malicious_files import write_malicious
from safetensors.torch import save_file

from sdstudio.config import DataPaths
from sdstudio.errors import ModelLoadError, NotFound, SdStudioError
from sdstudio.models.controlnet import (
    ControlNetArchitecture,
    ControlNetLibrary,
    adapter_config,
    controlnet_config,
    detect_controlnet,
    load_controlnet,
    original_state_dict,
    original_to_diffusers,
    shipped_controlnet_config,
)
from sdstudio.models.hashes import legacy_model_hash
from sdstudio.models.memory import ModelMemory
from sdstudio.models.registry import ModelRegistry

# Scaled-down shapes of the real ones: SD1.5 (conv projections, 8 heads) and SDXL (linear projections,
# 64-channel heads, no attention at the first level, deeper transformers further down, time ids + pooled text).
SD15_SHAPE = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
}
POOLED = 32
SDXL_SHAPE = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": (1, 2),
    "transformer_layers_per_block": (1, 2),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": POOLED + 6 * 256,
}
SHAPES = {"sd1": SD15_SHAPE, "sdxl": SDXL_SHAPE}


def random_controlnet(family: str) -> ControlNetModel:
    torch.manual_seed(0)
    model = ControlNetModel(**SHAPES[family]).eval()
    with torch.no_grad():  # zero convolutions start at zero: give them weights so the outputs say something
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    return model


def write_controlnet(model: ControlNetModel, path, layout: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = original_state_dict(model) if layout == "original" else model.state_dict()
    weights = {k: v.contiguous() for k, v in weights.items()}
    if path.suffix == ".safetensors":
        save_file(weights, str(path))
    else:
        torch.save({"state_dict": weights}, path)


def control_step(model: ControlNetModel, family: str) -> tuple[torch.Tensor, ...]:
    """One ControlNet call as the UNet's sampler makes it: an 8x8 latent, a 64x64 control image."""
    generator = torch.Generator().manual_seed(1)
    context = SHAPES[family]["cross_attention_dim"]
    kwargs = {}
    if family == "sdxl":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, POOLED, generator=generator),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]),
        }
    with torch.no_grad():
        down, mid = model(
            torch.randn(1, 4, 8, 8, generator=generator),
            torch.tensor([500]),
            encoder_hidden_states=torch.randn(1, 7, context, generator=generator),
            controlnet_cond=torch.rand(1, 3, 64, 64, generator=generator),
            return_dict=False,
            **kwargs,
        )
    return (*down, mid)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize(
    ("layout", "file_name"),
    [("original", "control_tiny.pth"), ("original", "control_tiny.safetensors"), ("diffusers", "tiny.safetensors")],
)
def test_controlnet_files_in_both_layouts_load_and_control_as_written(tmp_path, family, layout, file_name):
    source = random_controlnet(family)
    path = tmp_path / file_name
    write_controlnet(source, path, layout)

    loaded = load_controlnet(path)

    assert isinstance(loaded, ControlNetModel)
    expected, got = control_step(source, family), control_step(loaded, family)
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert have.shape == want.shape and torch.allclose(have, want, atol=1e-5)
    assert loaded.mid_block is not None and float(got[-1].abs().mean()) > 0


def test_loads_in_the_dtype_asked_for(tmp_path):
    path = tmp_path / "half.safetensors"
    write_controlnet(random_controlnet("sd1"), path, "original")
    loaded = load_controlnet(path, dtype=torch.float16)
    assert next(loaded.parameters()).dtype == torch.float16


@pytest.mark.parametrize(
    ("family", "layout"), [("sd1", "original"), ("sdxl", "original"), ("sd1", "diffusers"), ("sdxl", "diffusers")]
)
def test_architecture_is_read_from_the_keys(family, layout):
    model = random_controlnet(family)
    weights = original_state_dict(model) if layout == "original" else model.state_dict()
    assert detect_controlnet(weights) == ControlNetArchitecture(family, "controlnet", layout)


def test_a_1024_wide_context_is_sd2():
    shape = dict(SD15_SHAPE, cross_attention_dim=1024, use_linear_projection=True, attention_head_dim=(1, 1))
    weights = original_state_dict(ControlNetModel(**shape))
    assert detect_controlnet(weights).family == "sd2"


def random_adapter() -> T2IAdapter:
    torch.manual_seed(0)
    return T2IAdapter(in_channels=3, channels=[32, 64, 64], num_res_blocks=2, downscale_factor=8).eval()


def tencent_layout(adapter: T2IAdapter) -> dict[str, torch.Tensor]:
    """TencentARC's original adapter keys: ResBlocks numbered through all levels (`body.K`)."""
    per_level = 2
    weights = {}
    for key, tensor in adapter.state_dict().items():
        key = key.removeprefix("adapter.")
        if key.startswith("body."):
            _, level, part, *rest = key.split(".")
            if part == "resnets":
                key = ".".join(["body", str(int(level) * per_level + int(rest[0])), *rest[1:]])
            else:
                key = ".".join(["body", str(int(level) * per_level), part, *rest])
        weights[key] = tensor.contiguous()
    return weights


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_t2i_adapter_loads_and_gives_the_same_features(tmp_path, layout):
    source = random_adapter()
    weights = source.state_dict() if layout == "diffusers" else tencent_layout(source)
    path = tmp_path / "t2iadapter_canny_sd15v2.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    assert detect_controlnet(weights) == ControlNetArchitecture("sd1", "t2i_adapter", layout)

    loaded = load_controlnet(path)

    assert isinstance(loaded, T2IAdapter)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for want, have in zip(source(image), loaded(image), strict=True):
            assert torch.allclose(have, want, atol=1e-5)


def test_control_lora_is_recognised_and_refused_saying_why(tmp_path):
    weights = {"lora_controlnet": torch.zeros(1), "label_emb.0.0.weight": torch.zeros(4, 8)}
    assert detect_controlnet(weights).kind == "control_lora"
    path = tmp_path / "control-lora-canny-rank128.safetensors"
    save_file(weights, str(path))
    with pytest.raises(ModelLoadError, match=r"control-lora-canny-rank128\.safetensors: a control-LoRA"):
        load_controlnet(path)


def test_a_file_that_is_no_controlnet_is_refused_naming_it(tmp_path):
    path = tmp_path / "not_a_controlnet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(ModelLoadError, match=r"not_a_controlnet\.safetensors: not a ControlNet"):
        load_controlnet(path)


def test_incomplete_weights_are_refused_naming_the_file_and_what_is_missing(tmp_path):
    weights = original_state_dict(random_controlnet("sd1"))
    del weights["control_model.zero_convs.1.0.weight"]
    path = tmp_path / "cut.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    with pytest.raises(ModelLoadError, match=r"cut\.safetensors: .*controlnet_down_blocks\.1\.weight"):
        load_controlnet(path)


@pytest.fixture
def library(data_dir):
    paths = DataPaths(data_dir).ensure()
    sd1 = random_controlnet("sd1")
    folder = paths.folder("controlnet")
    write_controlnet(sd1, folder / "control_v11p_sd15_canny.pth", "original")
    write_controlnet(sd1, folder / "control_v11p_sd15_canny_anime.safetensors", "diffusers")
    write_controlnet(sd1, folder / "sub" / "control_v11f1p_sd15_depth.safetensors", "original")
    write_controlnet(sd1, data_dir / "extensions/sd-webui-controlnet/models/t2i_sketch.safetensors", "diffusers")
    return ControlNetLibrary(ModelRegistry(paths), max_loaded=2)


def test_the_data_dir_has_a_controlnet_folder_and_no_empty_extension_folder(data_dir):
    DataPaths(data_dir).ensure()
    assert (data_dir / "models" / "ControlNet").is_dir()
    assert not (data_dir / "extensions" / "sd-webui-controlnet").exists()


def test_titles_are_stem_and_legacy_hash_from_both_folders(library, data_dir):
    canny = data_dir / "models/ControlNet/control_v11p_sd15_canny.pth"
    titles = library.titles()
    assert f"control_v11p_sd15_canny [{legacy_model_hash(canny)}]" in titles
    assert sorted(title.rsplit(" [", 1)[0] for title in titles) == [
        "control_v11f1p_sd15_depth",
        "control_v11p_sd15_canny",
        "control_v11p_sd15_canny_anime",
        "t2i_sketch",
    ]
    assert all(len(title.rsplit("[", 1)[1]) == len("12345678]") for title in titles)
    assert library.registry.hash_cache.cached(canny) is None  # titles never hash whole files (GBs each)


def test_lookup_by_title_stem_or_shortest_name_containing_the_text(library, data_dir):
    folder = data_dir / "models/ControlNet"
    canny = folder / "control_v11p_sd15_canny.pth"
    title = f"control_v11p_sd15_canny [{legacy_model_hash(canny)}]"
    assert library.find(title) == canny.resolve()
    assert (
        library.find("control_v11p_sd15_canny_anime")
        == (folder / "control_v11p_sd15_canny_anime.safetensors").resolve()
    )
    assert library.find("canny") == canny.resolve()
    assert library.find("CANNY") == canny.resolve()
    assert library.find("depth") == (folder / "sub/control_v11f1p_sd15_depth.safetensors").resolve()
    assert library.find("control_v11p_sd15_canny [00000000]") == canny.resolve()  # a title whose hash changed
    assert library.find("sketch").name == "t2i_sketch.safetensors"
    with pytest.raises(NotFound, match="openpose"):
        library.find("openpose")


def test_loads_are_cached_and_the_oldest_is_evicted(library):
    canny = library.load("canny")
    assert library.load("control_v11p_sd15_canny") is canny
    library.load("depth")
    library.load("anime")
    assert len(library.memory.keys("controlnet")) == 2
    assert library.load("canny") is not canny


def test_loaded_models_live_in_the_shared_memory_owner(library):
    memory = ModelMemory(limits={"controlnet": 1})
    shared = ControlNetLibrary(library.registry, memory=memory)
    shared.load("canny")
    shared.load("depth")
    (key,) = memory.keys()
    assert "control_v11f1p_sd15_depth" in key and memory.report()["resident"] > 0


@pytest.mark.parametrize(("config_name", "family"), [("sd15.json", "sd1"), ("sd21.json", "sd2"), ("sdxl.json", "sdxl")])
def test_the_shipped_configs_are_what_full_size_files_are_read_as(config_name, family):
    """A full-size ControlNet (built without memory) in lllyasviel's layout reads back as its shipped config."""
    from accelerate import init_empty_weights

    config = shipped_controlnet_config(config_name)
    with init_empty_weights():
        model = ControlNetModel(**config)
    original = original_state_dict(model)
    assert detect_controlnet(original) == ControlNetArchitecture(family, "controlnet", "original")
    converted = original_to_diffusers({k.removeprefix("control_model."): v for k, v in original.items()})
    assert set(converted) == set(model.state_dict())
    assert controlnet_config(converted, family) == config


@pytest.mark.parametrize(
    ("config_name", "family"), [("t2i_adapter_sd15.json", "sd1"), ("t2i_adapter_sdxl.json", "sdxl")]
)
def test_the_shipped_adapter_configs_are_what_full_size_adapters_are_read_as(config_name, family):
    from accelerate import init_empty_weights

    config = shipped_controlnet_config(config_name)
    with init_empty_weights():
        weights = T2IAdapter(**config).state_dict()
    assert detect_controlnet(weights) == ControlNetArchitecture(family, "t2i_adapter", "diffusers")
    assert adapter_config(weights, family) == config


@pytest.mark.parametrize("form", ["zip", "raw"])
def test_a_malicious_pth_in_the_controlnet_folder_is_refused_and_never_run(library, data_dir, tmp_path, form):
    target = tmp_path / "pwned"
    evil = write_malicious(data_dir / "models/ControlNet/control_evil.pth", target, form)

    assert not any(title.startswith("control_evil") for title in library.titles())
    with pytest.raises(SdStudioError, match=r"control_evil\.pth"):
        library.find("control_evil")
    with pytest.raises(SdStudioError, match=r"control_evil\.pth"):
        load_controlnet(evil)
    assert not target.exists()
