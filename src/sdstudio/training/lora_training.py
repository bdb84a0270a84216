"""LoRA training on a folder of captioned images, saving kohya-format files A1111 loads.

Follows kohya-ss sd-scripts' `train_network.py` with `networks.lora` for SD1-layout models:

1. scan the folder (kohya `N_concept` repeats, .txt captions), encode every image once with
   the VAE (kohya's cache_latents) and, unless the text encoder trains, every caption once;
2. inject peft LoRA adapters (rank `rank`, alpha `network_alpha`, scale alpha/rank) into the
   UNet's transformer blocks (kohya's UNET_TARGET_REPLACE_MODULE: attention, projections,
   feed-forward), optionally ResNet 3x3 convolutions (LoCon, `conv_rank`) and the text
   encoder's attention/MLP (kohya's TEXT_ENCODER_TARGET_REPLACE_MODULE); down weights are
   kaiming-uniform, up weights zero, so training starts from the base model;
3. each step: t ~ U[0, T), x_t = sqrt(a_t) x_0 + sqrt(1-a_t) eps on the base model's noise
   schedule, loss = MSE(eps_theta(x_t, t, c), eps) (epsilon prediction, Ho et al. 2020);
   AdamW with gradient accumulation;
4. save `lora_unet_*` / `lora_te_*` `.lora_down.weight`, `.lora_up.weight`, `.alpha` with
   kohya's `ss_*` metadata; every `save_every` steps also a numbered file and the resumable
   state (weights, optimizer, RNG, data position); sample images every `sample_every` steps.

Randomness comes from one explicit `torch.Generator` (noise, timesteps, init) and per-epoch
shuffles seeded from `seed`, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdstudio.errors import InvalidRequest
from sdstudio.training.lora_dataset import TrainingImage, dataset_dirs, tag_frequency

ADAPTER = "default"
STATE_WEIGHTS = "lora_state.safetensors"
STATE_OPTIMIZER = "optimizer.pt"
STATE_INFO = "state.json"


@dataclass
class TrainingBase:
    """The base model's parts training needs (an SD1-layout checkpoint)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    scheduler_config: dict
    vae_scaling_factor: float = 0.18215
    name: str = ""
    path: Path | None = None

    @classmethod
    def from_loaded(cls, loaded: Any, path: Path | None = None) -> "TrainingBase":
        """From the model manager's LoadedCheckpoint (attributes read by name, SD1/SD2 only)."""
        encoders = getattr(loaded, "text_encoders", None) or [getattr(loaded, "text_encoder", None)]
        encoders = [e for e in encoders if e is not None]
        if len(encoders) != 1:
            raise InvalidRequest("base", "LoRA training supports SD1/SD2-layout checkpoints (one text encoder) for now")
        scaling = getattr(loaded, "vae_scaling_factor", None) or getattr(loaded, "scale_factor", None)
        if scaling is None:
            scaling = getattr(loaded.vae.config, "scaling_factor", 0.18215)
        name = getattr(loaded, "name", "") or (path.stem if path else "")
        return cls(loaded.unet, loaded.vae, encoders[0], dict(getattr(loaded, "scheduler_config", {}) or {}), float(scaling), name, path)


@dataclass
class LoraTrainingConfig:
    """kohya-style training parameters (names as sd-scripts' command line)."""

    output_name: str
    resolution: int = 512
    max_train_steps: int = 1600
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    text_encoder_lr: float | None = None  # None: learning_rate
    rank: int = 4  # network_dim
    network_alpha: float = 1.0
    conv_rank: int = 0  # LoCon on ResNet 3x3 convolutions (kohya network_args conv_dim)
    conv_alpha: float = 1.0
    train_text_encoder: bool = False
    seed: int = 0
    save_every: int = 0  # steps; 0 = only at the end
    sample_every: int = 0  # steps; 0 = only at the end (when sample prompts are given)
    sample_prompts: list[str] = field(default_factory=list)
    sample_steps: int = 20
    sample_cfg_scale: float = 7.0

    def check(self) -> None:
        """Reject values kohya would reject, naming the option."""
        for name in ("resolution", "max_train_steps", "train_batch_size", "gradient_accumulation_steps", "rank"):
            if int(getattr(self, name)) < 1:
                raise InvalidRequest(name.replace("_", "-"), "must be at least 1")
        if self.learning_rate <= 0:
            raise InvalidRequest("learning-rate", "must be positive")
        if self.network_alpha <= 0:
            raise InvalidRequest("network-alpha", "must be positive")
        if not self.output_name or any(c in self.output_name for c in "/\\:"):
            raise InvalidRequest("output", "give a plain file name without folders, e.g. --output my_style")


@dataclass
class LoraTrainingResult:
    """Where the LoRA went and how training went."""

    path: Path
    steps: int
    losses: list[float]
    sample_paths: list[Path]
    seconds: float
    resumed_from: int = 0


# --------------------------------------------------------------------------------------
# Step 1: data
# --------------------------------------------------------------------------------------


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """RGB image, centre-cropped to a square and resized to `resolution`, as [3, H, W] in [-1, 1]."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.Resampling.LANCZOS)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def caption_token_ids(captions: list[str]) -> torch.Tensor:
    """[B, 77] CLIP ids: BOS, up to 75 caption tokens, EOS, EOS padding (SD1 CLIP, kohya max_token_length 75)."""
    from sdstudio.prompts.tokenizer import BOS_ID, EOS_ID, tokenize

    rows = []
    for caption in captions:
        ids = [BOS_ID, *tokenize(caption)[:75], EOS_ID]
        rows.append(ids + [EOS_ID] * (77 - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, images: list[TrainingImage], resolution: int, scaling: float, batch: int = 8) -> torch.Tensor:
    """Latents of every image (distribution mean x scaling factor), computed once."""
    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    latents = []
    for start in range(0, len(images), batch):
        pixels = torch.stack([load_image(i.path, resolution) for i in images[start : start + batch]])
        latents.append(vae.encode(pixels.to(device, dtype)).latent_dist.mean.float() * scaling)
    return torch.cat(latents)


# --------------------------------------------------------------------------------------
# Step 2: networks
# --------------------------------------------------------------------------------------


def unet_lora_targets(unet: torch.nn.Module, conv: bool = False) -> list[str]:
    """kohya's LoRA targets: Linear and 1x1 Conv2d inside transformer blocks (+ 3x3 ResNet convs for LoCon)."""
    targets = []
    for name, module in unet.named_modules():
        in_transformer = ".attentions." in f".{name}."
        if in_transformer and isinstance(module, torch.nn.Linear):
            targets.append(name)
        elif in_transformer and isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1):
            targets.append(name)
        elif conv and isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3) and (".resnets." in name or "samplers." in name):
            targets.append(name)
    return targets


def text_encoder_lora_targets(text_encoder: torch.nn.Module) -> list[str]:
    """kohya's text-encoder targets: the Linear layers of CLIP attention and MLP blocks."""
    return [n for n, m in text_encoder.named_modules() if isinstance(m, torch.nn.Linear) and (".self_attn." in n or ".mlp." in n)]


def inject_lora(model: torch.nn.Module, targets: list[str], rank: int, alpha: float, generator: torch.Generator,
                conv_targets: list[str] = (), conv_rank: int = 0, conv_alpha: float = 1.0) -> list[torch.nn.Parameter]:
    """peft LoRA adapters on `targets`; down ~ kaiming-uniform from `generator`, up = 0. Returns the trainable params."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    all_targets = list(targets) + list(conv_targets)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=all_targets, lora_dropout=0.0, bias="none",
        rank_pattern={t: conv_rank for t in conv_targets}, alpha_pattern={t: conv_alpha for t in conv_targets},
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = []
    for name in all_targets:
        layer = model.get_submodule(name)
        down, up = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        with torch.no_grad():
            bound = 1.0 / math.sqrt(down[0].numel())  # kaiming_uniform_(a=sqrt(5)), as kohya and peft
            down.copy_(torch.rand(down.shape, generator=generator) * 2 * bound - bound)
            up.zero_()
        down.requires_grad_(True)
        up.requires_grad_(True)
        params += [down, up]
    return params


def kohya_state_dict(model: torch.nn.Module, prefix: str, add_text_model: bool = False) -> dict[str, torch.Tensor]:
    """The injected adapters as kohya keys: `{prefix}{path_with_underscores}.lora_down.weight` / `.lora_up.weight` / `.alpha`."""
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in model.named_modules():
        lora_a = getattr(layer, "lora_A", None)
        if lora_a is None or ADAPTER not in lora_a:
            continue
        path = f"text_model.{name}" if add_text_model else name
        key = prefix + path.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = lora_a[ADAPTER].weight.detach().float().cpu().contiguous()
        tensors[f"{key}.lora_up.weight"] = layer.lora_B[ADAPTER].weight.detach().float().cpu().contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(float(layer.lora_alpha[ADAPTER]))
    return tensors


def load_kohya_state(model: torch.nn.Module, prefix: str, tensors: dict[str, torch.Tensor], add_text_model: bool = False) -> int:
    """Copy saved kohya weights back into injected adapters (resume); returns modules filled."""
    filled = 0
    with torch.no_grad():
        for name, layer in model.named_modules():
            lora_a = getattr(layer, "lora_A", None)
            if lora_a is None or ADAPTER not in lora_a:
                continue
            key = prefix + (f"text_model.{name}" if add_text_model else name).replace(".", "_")
            if f"{key}.lora_down.weight" in tensors:
                lora_a[ADAPTER].weight.copy_(tensors[f"{key}.lora_down.weight"])
                layer.lora_B[ADAPTER].weight.copy_(tensors[f"{key}.lora_up.weight"])
                filled += 1
    return filled


def remove_lora(model: torch.nn.Module) -> None:
    """Put the base layers back (after training, the base model is unchanged)."""
    for name, layer in list(model.named_modules()):
        if name and hasattr(layer, "get_base_layer") and hasattr(layer, "lora_A"):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if getattr(parent, child) is layer:
                setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


# --------------------------------------------------------------------------------------
# Step 4: files
# --------------------------------------------------------------------------------------


def legacy_model_hash(path: Path) -> str:
    """A1111's old 8-digit model hash (sha256 of 64 KiB at 1 MiB), kohya's ss_sd_model_hash."""
    with open(path, "rb") as handle:
        handle.seek(0x100000)
        return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the safetensors data section (kohya's sshs_model_hash = A1111's addnet hash)."""
    from safetensors.torch import save

    blob = save(tensors)
    header = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + header :]).hexdigest()


def training_metadata(config: LoraTrainingConfig, base: TrainingBase, images: list[TrainingImage], steps_done: int,
                      started: float, session_id: str, base_hashes: tuple[str, str], batches_per_epoch: int) -> dict[str, str]:
    """kohya's `ss_*` metadata (all values strings, JSON for the nested ones)."""
    epochs = math.ceil(config.max_train_steps * config.gradient_accumulation_steps / max(1, batches_per_epoch))
    network_args = {"conv_dim": str(config.conv_rank), "conv_alpha": str(config.conv_alpha)} if config.conv_rank else None
    return {
        "ss_session_id": session_id,
        "ss_training_started_at": str(started),
        "ss_training_finished_at": str(time.time()),
        "ss_output_name": config.output_name,
        "ss_learning_rate": str(config.learning_rate),
        "ss_unet_lr": str(config.learning_rate),
        "ss_text_encoder_lr": str(config.text_encoder_lr or config.learning_rate) if config.train_text_encoder else "None",
        "ss_num_train_images": str(sum(i.repeats for i in images)),
        "ss_num_reg_images": "0",
        "ss_num_batches_per_epoch": str(batches_per_epoch),
        "ss_num_epochs": str(epochs),
        "ss_batch_size_per_device": str(config.train_batch_size),
        "ss_total_batch_size": str(config.train_batch_size * config.gradient_accumulation_steps),
        "ss_gradient_accumulation_steps": str(config.gradient_accumulation_steps),
        "ss_max_train_steps": str(config.max_train_steps),
        "ss_steps": str(steps_done),
        "ss_lr_warmup_steps": "0",
        "ss_lr_scheduler": "constant",
        "ss_optimizer": "torch.optim.adamw.AdamW",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.rank),
        "ss_network_alpha": str(config.network_alpha),
        "ss_network_args": json.dumps(network_args) if network_args else "null",
        "ss_network_train_unet_only": str(not config.train_text_encoder),
        "ss_network_train_text_encoder_only": "False",
        "ss_mixed_precision": "no",
        "ss_full_fp16": "False",
        "ss_v2": "False",
        "ss_base_model_version": "sd_v1",
        "ss_clip_skip": "None",
        "ss_max_token_length": "None",
        "ss_resolution": f"({config.resolution}, {config.resolution})",
        "ss_enable_bucket": "False",
        "ss_cache_latents": "True",
        "ss_caption_dropout_rate": "0.0",
        "ss_noise_offset": "None",
        "ss_seed": str(config.seed),
        "ss_sd_model_name": base.path.name if base.path else base.name,
        "ss_sd_model_hash": base_hashes[0],
        "ss_new_sd_model_hash": base_hashes[1],
        "ss_tag_frequency": json.dumps(tag_frequency(images)),
        "ss_dataset_dirs": json.dumps(dataset_dirs(images)),
        "ss_training_comment": "trained with sdstudio train-lora",
    }


# --------------------------------------------------------------------------------------
# Samples (a small Euler sampler, so training does not depend on the engine's internals)
# --------------------------------------------------------------------------------------


@torch.no_grad()
def sample_images(base: TrainingBase, prompts: list[str], resolution: int, seed: int, steps: int = 20, cfg_scale: float = 7.0) -> list[Image.Image]:
    """Euler sampling with classifier-free guidance on the current (LoRA-injected) model."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(base.scheduler_config)
    device = next(base.unet.parameters()).device
    factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    channels = int(base.unet.config.in_channels)
    images = []
    for index, prompt in enumerate(prompts):
        ids = caption_token_ids([prompt, ""]).to(device)
        context = base.text_encoder(ids)[0]
        generator = torch.Generator().manual_seed(seed + index)
        scheduler.set_timesteps(steps)  # also resets the scheduler's step index for this prompt
        x = torch.randn(1, channels, resolution // factor, resolution // factor, generator=generator).to(device) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(torch.cat([x, x]), t)
            eps = base.unet(model_in, t, encoder_hidden_states=context).sample
            cond, uncond = eps.chunk(2)
            x = scheduler.step(uncond + cfg_scale * (cond - uncond), t, x).prev_sample
        pixels = base.vae.decode(x / base.vae_scaling_factor).sample.float()
        array = ((pixels[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        images.append(Image.fromarray(array))
    return images


# --------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------


class _EpochOrder:
    """Shuffled image order per epoch (seeded by seed + epoch), with a resumable position."""

    def __init__(self, repeated: list[int], seed: int, epoch: int = 0, position: int = 0):
        self.repeated, self.seed, self.epoch, self.position = repeated, seed, epoch, position
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        perm = torch.randperm(len(self.repeated), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return [self.repeated[i] for i in perm.tolist()]

    def take(self, count: int) -> list[int]:
        batch = []
        while len(batch) < count:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffle()
            batch.append(self._order[self.position])
            self.position += 1
        return batch


def train_lora(
    base: TrainingBase,
    images: list[TrainingImage],
    config: LoraTrainingConfig,
    output_dir: Path,
    state_dir: Path | None = None,
    samples_dir: Path | None = None,
    resume: bool = False,
    progress_bar: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> LoraTrainingResult:
    """Train a LoRA on `images` over `base` and save `output_dir/{output_name}.safetensors`."""
    from diffusers import DDPMScheduler
    from safetensors.torch import load_file, save_file

    config.check()
    began = time.monotonic()
    output_dir.mkdir(parents=True, exist_ok=True)
    started, session_id = time.time(), str(uuid.uuid4())
    base_hashes = (legacy_model_hash(base.path), file_sha256(base.path)) if base.path and base.path.is_file() else ("", "")
    add_text_model = not hasattr(base.text_encoder, "text_model")
    train_te = config.train_text_encoder

    # Step 1: data, encoded once
    latents = encode_latents(base.vae, images, config.resolution, base.vae_scaling_factor)
    captions = [image.caption for image in images]
    token_ids = caption_token_ids(captions)
    cached_context = None
    if not train_te:
        with torch.no_grad():
            cached_context = torch.cat([base.text_encoder(token_ids[i : i + 16])[0] for i in range(0, len(images), 16)])
    repeated = [i for i, image in enumerate(images) for _ in range(image.repeats)]
    batches_per_epoch = math.ceil(len(repeated) / config.train_batch_size)

    # Step 2: networks
    generator = torch.Generator().manual_seed(config.seed)
    unet_targets = unet_lora_targets(base.unet)
    conv_targets = [t for t in unet_lora_targets(base.unet, conv=True) if t not in unet_targets] if config.conv_rank else []
    params = inject_lora(base.unet, unet_targets, config.rank, config.network_alpha, generator, conv_targets, config.conv_rank, config.conv_alpha)
    groups = [{"params": params, "lr": config.learning_rate}]
    if train_te:
        te_params = inject_lora(base.text_encoder, text_encoder_lora_targets(base.text_encoder), config.rank, config.network_alpha, generator)
        groups.append({"params": te_params, "lr": config.text_encoder_lr or config.learning_rate})
    optimizer = torch.optim.AdamW(groups)
    noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    num_timesteps = int(noise_scheduler.config.num_train_timesteps)

    step, losses, order = 0, [], _EpochOrder(repeated, config.seed)
    if resume and state_dir is not None and (state_dir / STATE_INFO).is_file():
        info = json.loads((state_dir / STATE_INFO).read_text())
        saved = load_file(str(state_dir / STATE_WEIGHTS))
        load_kohya_state(base.unet, "lora_unet_", saved)
        if train_te:
            load_kohya_state(base.text_encoder, "lora_te_", saved, add_text_model)
        optimizer.load_state_dict(torch.load(state_dir / STATE_OPTIMIZER, weights_only=True))
        generator.set_state(torch.tensor(info["generator_state"], dtype=torch.uint8))
        step, losses = int(info["step"]), list(info["losses"])
        order = _EpochOrder(repeated, config.seed, int(info["epoch"]), int(info["position"]))
    resumed_from = step

    def network_tensors() -> dict[str, torch.Tensor]:
        tensors = kohya_state_dict(base.unet, "lora_unet_")
        if train_te:
            tensors.update(kohya_state_dict(base.text_encoder, "lora_te_", add_text_model))
        return tensors

    def save_lora(path: Path) -> None:
        tensors = network_tensors()
        metadata = training_metadata(config, base, images, step, started, session_id, base_hashes, batches_per_epoch)
        metadata["sshs_model_hash"] = tensors_hash(tensors)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)

    def save_state() -> None:
        if state_dir is None:
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        save_file(network_tensors(), str(state_dir / STATE_WEIGHTS))
        torch.save(optimizer.state_dict(), state_dir / STATE_OPTIMIZER)
        info = {"step": step, "losses": losses, "epoch": order.epoch, "position": order.position,
                "generator_state": generator.get_state().tolist(), "config": asdict(config)}
        (state_dir / STATE_INFO).write_text(json.dumps(info))

    sample_paths: list[Path] = []

    def save_samples() -> None:
        if not config.sample_prompts or samples_dir is None:
            return
        samples_dir.mkdir(parents=True, exist_ok=True)
        base.unet.eval()
        for i, image in enumerate(sample_images(base, config.sample_prompts, config.resolution, config.seed, config.sample_steps, config.sample_cfg_scale)):
            path = samples_dir / f"{config.output_name}_{step:06d}_{i:02d}.png"
            image.save(path)
            sample_paths.append(path)

    bar = None
    if progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=config.max_train_steps, initial=step, desc=f"train-lora {config.output_name}", unit="step")
    # Step 3: the loop
    base.unet.train()
    while step < config.max_train_steps:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(config.gradient_accumulation_steps):
            picks = order.take(config.train_batch_size)
            x0 = latents[picks]
            noise = torch.randn(x0.shape, generator=generator)
            t = torch.randint(0, num_timesteps, (len(picks),), generator=generator)
            a = alphas_cumprod[t].float().view(-1, 1, 1, 1)
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            context = cached_context[picks] if cached_context is not None else base.text_encoder(token_ids[picks])[0]
            device = next(base.unet.parameters()).device
            pred = base.unet(noisy.to(device), t.to(device), encoder_hidden_states=context.to(device)).sample
            loss = F.mse_loss(pred.float(), noise.to(device).float()) / config.gradient_accumulation_steps
            loss.backward()
            total += float(loss.detach())
        optimizer.step()
        step += 1
        losses.append(total)
        if bar is not None:
            bar.set_postfix(loss=f"{total:.4f}")
            bar.update(1)
        if on_step is not None:
            on_step(step, total)
        if config.save_every and step % config.save_every == 0 and step < config.max_train_steps:
            save_lora(output_dir / f"{config.output_name}-step{step:08d}.safetensors")
            save_state()
        if config.sample_every and step % config.sample_every == 0 and step < config.max_train_steps:
            save_samples()
            base.unet.train()
    if bar is not None:
        bar.close()
    base.unet.eval()

    # Step 4: files
    final = output_dir / f"{config.output_name}.safetensors"
    save_lora(final)
    save_state()
    save_samples()
    remove_lora(base.unet)
    if train_te:
        remove_lora(base.text_encoder)
    return LoraTrainingResult(final, step, losses, sample_paths, time.monotonic() - began, resumed_from)
