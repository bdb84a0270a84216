"""Tiny random-weight models for tests, built on the fly (no files, no hub), seeded without touching the caller's RNG.

Every builder takes a `seed`: the same seed gives the same weights whatever ran before, and
building never changes the global RNG a test (or the code under test) draws from afterwards.
Keyword arguments override the builder's default config, so a test asks for the variant it needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}

# A 2-level SD1-shaped UNet (conv proj_in, cross-attention) with ~0.5M parameters.
UNET_DEFAULTS = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
# A 4-level VAE: 8x down-sampling like SD's, with few channels.
VAE_DEFAULTS = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 8, 16, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
)
# The 2-level VAE (2x down-sampling, 32 px tiles) of the checkpoint files and the single-file loader tests.
CHECKPOINT_VAE = dict(block_out_channels=(32, 32), norm_num_groups=32, sample_size=32)
# The UNet and text encoder of the checkpoint files (64-wide context, as the LDM yaml writer expects).
CHECKPOINT_UNET = dict(cross_attention_dim=64, attention_head_dim=2)
CHECKPOINT_CLIP = dict(hidden=64, heads=1)


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Inside the block the CPU RNG starts from `seed`; after it the caller's RNG state is back as it was."""
    # diffusers and transformers initialise weights from the global generator and take no generator
    # argument, so the global CPU generator is forked, seeded for the build and restored.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def sdxl_added_conditioning(pooled_dim: int) -> dict:
    """UNet config for SDXL's added conditioning: pooled text embeds plus 6 time ids of 8 channels each."""
    return dict(
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=pooled_dim + 6 * 8,
    )


def _unet(**config):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET_DEFAULTS, **config}).eval().requires_grad_(False)


def _vae(**config):
    from diffusers import AutoencoderKL

    config = {**VAE_DEFAULTS, **config}
    levels = len(config["block_out_channels"])
    return (
        AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels, **config
        )
        .eval()
        .requires_grad_(False)
    )


def _clip(
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    projection: int | None = None,
    act: str = "quick_gelu",
    layer_norm_noise: float = 0.0,
):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection or hidden,
        # as the loader configures them: SD1's CLIP pads with the end token, OpenCLIP (gelu) with 0
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407 if act == "quick_gelu" else 0,
    )
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    if layer_norm_noise:
        # Fresh LayerNorms (weight 1, bias 0) make every row's mean exactly 0, unlike trained CLIP.
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.weight.add_(layer_norm_noise * torch.randn_like(module.weight))
                    module.bias.add_(layer_norm_noise * torch.randn_like(module.bias))
    return model.eval().requires_grad_(False)


def tiny_unet(seed: int = 0, **config):
    """A random UNet2DConditionModel: UNET_DEFAULTS with `config` on top, in eval mode without gradients."""
    with seeded_rng(seed):
        return _unet(**config)


def tiny_vae(seed: int = 0, **config):
    """A random AutoencoderKL (one level per entry of block_out_channels): VAE_DEFAULTS with `config` on top."""
    with seeded_rng(seed):
        return _vae(**config)


def tiny_clip(
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    projection: int | None = None,
    act: str = "quick_gelu",
    layer_norm_noise: float = 0.0,
):
    """A random CLIP text encoder with the real vocabulary and 77 positions (plus a projection head if `projection`)."""
    with seeded_rng(seed):
        return _clip(hidden, layers, heads, projection, act, layer_norm_noise)


def randomize(module, seed: int = 1):
    """Non-zero random weights everywhere (diffusers zero-initialises some output layers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return module


class HashTextEncoder:
    """Stands in for CLIP: each prompt maps to its own fixed random tensor; `calls` records what was encoded."""

    def __init__(self, dim: int = 32, tokens: int = 77):
        self.dim, self.tokens = dim, tokens
        self.calls: list[tuple[list[str], list[str], int]] = []

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """No real text encoder: LoRA text-encoder weights have nothing to patch."""
        return []

    def clear_cache(self) -> None:
        """Nothing is cached."""

    def embed(self, text: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return torch.randn(self.tokens, self.dim, generator=torch.Generator().manual_seed(seed))

    def encode(self, prompts, negative_prompts, steps, clip_skip, width, height, check_cancelled=None):
        from sdstudio.engine.sampling import FixedConditioning

        self.calls.append((list(prompts), list(negative_prompts), steps))
        return FixedConditioning(
            torch.stack([self.embed(p) for p in prompts]), torch.stack([self.embed(n) for n in negative_prompts])
        )


def tiny_generation_model(unet=None, vae=None, encoder=None, seed: int = 0, **fields):
    """A GenerationModel over the given parts.

    A missing UNet/VAE is built from `seed`; a missing encoder is a HashTextEncoder.
    """
    from sdstudio.engine.job_context import GenerationModel

    return GenerationModel(
        unet=tiny_unet(seed) if unet is None else unet,
        vae=tiny_vae(seed) if vae is None else vae,
        encoder=HashTextEncoder() if encoder is None else encoder,
        scheduler_config=dict(SCHEDULER_CONFIG),
        **fields,
    )


def write_tiny_checkpoint(folder, name: str = "random-tiny.safetensors", seed: int = 0) -> Path:
    """A tiny random SD1-layout checkpoint (+ LDM yaml) written through the real saver."""
    from sdstudio.models.saver import ldm_yaml_for, save_checkpoint

    with seeded_rng(seed):  # one stream for the three parts: the files keep the weights they always had
        unet = _unet(**CHECKPOINT_UNET)
        vae = _vae(**CHECKPOINT_VAE)
        text_encoder = _clip(**CHECKPOINT_CLIP)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(
        folder / name,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        yaml_text=ldm_yaml_for(unet.config, vae.config, scale_factor=0.5),
    )


# A word-level BERT vocabulary for the tiny BLIP's tokenizer (special tokens first, as BERT's).
BLIP_WORDS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "picture", "of", "cat", "dog", "red", "blue", "house")
# One 32-wide transformer layer: the text and vision towers of the tiny BLIP and CLIP.
TINY_LAYERS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
TINY_VISION = dict(TINY_LAYERS, image_size=32, patch_size=8)


def write_tiny_blip(folder, seed: int = 0) -> Path:
    """A random BLIP captioning model in the Hugging Face layout (weights, config, processor, tokenizer)."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    config = BlipConfig(
        vision_config=TINY_VISION,
        text_config=dict(
            TINY_LAYERS,
            vocab_size=len(BLIP_WORDS),
            encoder_hidden_size=32,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=2,
            sep_token_id=3,
            eos_token_id=3,
        ),
        projection_dim=32,
        image_text_hidden_size=32,
    )
    with seeded_rng(seed):
        model = BlipForConditionalGeneration(config)
    tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(BLIP_WORDS)})
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_tiny_clip_model(folder, seed: int = 0, with_tokenizer: bool = True) -> Path:
    """A random CLIPModel (text and vision) in the Hugging Face layout; the tokenizer is sdstudio's shipped vocab."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sdstudio.prompts.tokenizer import clip_tokenizer

    config = CLIPConfig(
        text_config=dict(TINY_LAYERS, vocab_size=49408, max_position_embeddings=77),
        vision_config=TINY_VISION,
        projection_dim=16,
    )
    with seeded_rng(seed):
        model = CLIPModel(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    folder = Path(folder)
    model.save_pretrained(folder)
    if with_tokenizer:
        CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer("sd1")).save_pretrained(folder)
    else:
        image_processor.save_pretrained(folder)
    return folder


# -- A1111's own interrogation files: Salesforce's BLIP .pth and OpenAI's CLIP TorchScript .pt --------------
# 64-wide heads, as the converters assume (BLIP and OpenAI CLIP derive head counts as width // 64).
A1111_LAYERS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1)
A1111_VISION = dict(A1111_LAYERS, image_size=32, patch_size=8)


def tiny_blip_captioner(seed: int = 0):
    """A random BlipForConditionalGeneration over BLIP's real tokenizer (bert-base-uncased + [DEC], [ENC])."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    from sdstudio.postprocess.blip_checkpoint import blip_tokenizer

    tokenizer = blip_tokenizer()
    config = BlipConfig(
        vision_config=dict(A1111_VISION, layer_norm_eps=1e-6),
        text_config=dict(
            A1111_LAYERS,
            vocab_size=len(tokenizer),
            encoder_hidden_size=64,
            max_position_embeddings=40,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.sep_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        projection_dim=64,
        image_text_hidden_size=64,
    )
    with seeded_rng(seed):
        return BlipForConditionalGeneration(config).eval()


def tiny_openai_clip(seed: int = 0):
    """A random ViT CLIPModel with fp16-exact weights (OpenAI ships fp16) and a non-square text projection."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(A1111_LAYERS, vocab_size=49408, max_position_embeddings=77),
        vision_config=A1111_VISION,
        projection_dim=32,
    )
    with seeded_rng(seed):
        model = CLIPModel(config).eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def salesforce_blip_state_dict(model) -> dict[str, torch.Tensor]:
    """`model`'s weights under Salesforce BLIP's names (models/vit.py, models/med.py), as its .pth holds them."""
    renames = (
        ("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj."),
        ("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
        ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
        ("vision_model.post_layernorm.", "visual_encoder.norm."),
        ("vision_model.encoder.layers.", "visual_encoder.blocks."),
        (".layer_norm1.", ".norm1."),
        (".layer_norm2.", ".norm2."),
        (".self_attn.qkv.", ".attn.qkv."),
        (".self_attn.projection.", ".attn.proj."),
    )
    original = {}
    for key, tensor in model.state_dict().items():
        for old, new in renames:
            key = key.replace(old, new)
        original[key] = tensor.clone()
    positions = model.config.text_config.max_position_embeddings
    original["text_decoder.bert.embeddings.position_ids"] = torch.arange(positions).expand((1, -1)).clone()
    return original


def openai_clip_state_dict(model) -> dict[str, torch.Tensor]:
    """`model`'s weights under OpenAI CLIP's names (clip/model.py), q/k/v packed, projections as `x @ proj`."""
    hf = model.state_dict()
    original = {
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": hf["text_model.final_layer_norm.weight"],
        "ln_final.bias": hf["text_model.final_layer_norm.bias"],
        "text_projection": hf["text_projection.weight"].t(),
        "logit_scale": hf["logit_scale"],
        "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": hf["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": hf["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": hf["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": hf["vision_model.post_layernorm.bias"],
        "visual.proj": hf["visual_projection.weight"].t(),
        "input_resolution": torch.tensor(model.config.vision_config.image_size),
        "context_length": torch.tensor(model.config.text_config.max_position_embeddings),
        "vocab_size": torch.tensor(model.config.text_config.vocab_size),
    }
    towers = (("", "text_model", model.config.text_config), ("visual.", "vision_model", model.config.vision_config))
    for prefix, tower, config in towers:
        for index in range(config.num_hidden_layers):
            layer, block = f"{tower}.encoder.layers.{index}.", f"{prefix}transformer.resblocks.{index}."
            for kind in ("weight", "bias"):
                q, k, v = (hf[f"{layer}self_attn.{name}_proj.{kind}"] for name in "qkv")
                original[f"{block}attn.in_proj_{kind}"] = torch.cat([q, k, v])
                for old, new in (
                    ("self_attn.out_proj", "attn.out_proj"),
                    ("layer_norm1", "ln_1"),
                    ("layer_norm2", "ln_2"),
                ):
                    original[f"{block}{new}.{kind}"] = hf[f"{layer}{old}.{kind}"]
                for old, new in (("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                    original[f"{block}{new}.{kind}"] = hf[f"{layer}{old}.{kind}"]
    return {key: tensor.clone().contiguous() for key, tensor in original.items()}


class ScriptedHolder(torch.nn.Module):
    """A scriptable module that only holds attributes: OpenAI's module tree, named as OpenAI names it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write_torchscript_archive(path, tensors: dict[str, torch.Tensor], extra_attributes=()) -> Path:
    """A real TorchScript archive (torch.jit.script + save) whose attribute paths are `tensors`' keys."""
    import warnings

    root = ScriptedHolder()
    for key, tensor in [*tensors.items(), *extra_attributes]:
        *modules, name = key.split(".")
        owner = root
        for part in modules:
            if part not in owner._modules:
                owner.add_module(part, ScriptedHolder())
            owner = owner._modules[part]
        owner.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI's files are made with it
        scripted = torch.jit.script(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path))
    return path


def write_openai_clip_archive(path, model) -> Path:
    """`model` as OpenAI ships CLIP: a TorchScript archive of fp16 tensors (with cached attention masks)."""
    tensors = {key: t.half() if t.is_floating_point() else t for key, t in openai_clip_state_dict(model).items()}
    context = model.config.text_config.max_position_embeddings
    mask = torch.full((context, context), float("-inf")).triu(1)
    layers = range(model.config.text_config.num_hidden_layers)
    masks = [(f"transformer.resblocks.{index}.attn_mask", mask.clone()) for index in layers]
    return write_torchscript_archive(path, tensors, masks)


def write_salesforce_blip(path, model) -> Path:
    """`model` as A1111's models/BLIP/model_base_caption_capfilt_large.pth: torch.save({"model": state_dict})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": salesforce_blip_state_dict(model), "config": {"image_size": 32}}, path)
    return path


def write_blip_folder(folder, model) -> Path:
    """`model` in the Hugging Face layout with BLIP's tokenizer (the reference the A1111 file must match)."""
    from transformers import BlipImageProcessor, BlipProcessor

    from sdstudio.postprocess.blip_checkpoint import blip_tokenizer

    size = model.config.vision_config.image_size
    folder = Path(folder)
    model.save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": size, "width": size})
    BlipProcessor(image_processor=image_processor, tokenizer=blip_tokenizer()).save_pretrained(folder)
    return folder


def write_clip_folder(folder, model) -> Path:
    """`model` in the Hugging Face layout, OpenAI's preprocessing (the reference the A1111 file must match)."""
    from transformers import CLIPImageProcessor

    size = model.config.vision_config.image_size
    folder = Path(folder)
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(folder)
    return folder


def tiny_controlnet(unet, seed: int = 0, scale: float = 0.5, image_scale: float = 20.0):
    """A ControlNetModel made from `unet` (diffusers' from_unet), its zero convolutions given random weights.

    Fresh from the UNet a ControlNet adds nothing and ignores its image (zero convolutions), so a test
    of what a unit changes needs them random.
    """
    from diffusers import ControlNetModel

    with seeded_rng(seed):
        model = ControlNetModel.from_unet(unet)
        for conv in [*model.controlnet_down_blocks, model.controlnet_mid_block]:
            torch.nn.init.normal_(conv.weight, std=scale)
        # the control image's features strong enough to steer the output where the image says
        torch.nn.init.normal_(model.controlnet_cond_embedding.conv_out.weight, std=image_scale)
    return model.eval().requires_grad_(False)
