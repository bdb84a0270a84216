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
   state (weights, optimizer, RNG, data position); sample images every `sample_every` steps
   through the engine's sampler table (Euler), as generation would make them.

`LoraTrainer` holds one run (steps 1-2 on construction, `step()`/`train()` for 3-4) and its
`LoraTrainingState`; `train_lora` is the whole run in one call.

Randomness comes from one explicit `torch.Generator` (noise, timesteps, init) and per-epoch
shuffles seeded from `seed`, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdstudio.config import atomic_path, atomic_write_bytes
from sdstudio.engine.images import tensor_to_pil
from sdstudio.engine.samplers import DiscreteSigmas, SamplerOptions, resolve_sampler_and_schedule
from sdstudio.engine.sampling import FixedConditioning, GuidedUNet, SamplingJob, run_sampler
from sdstudio.engine.seeds import ImageNoise
from sdstudio.errors import InvalidRequest
from sdstudio.models.hashes import addnet_hash_safetensors_bytes, legacy_model_hash, sha256_of_file
from sdstudio.models.loader import LoadedCheckpoint
from sdstudio.training.lora_dataset import TrainingImage, dataset_dirs, tag_frequency

if TYPE_CHECKING:
    from peft.tuners.lora import LoraLayer

ADAPTER = "default"
STATE_WEIGHTS = "lora_state.safetensors"
STATE_OPTIMIZER = "optimizer.pt"
STATE_INFO = "state.json"


@dataclass
class TrainingBase:
    """The base model's parts training needs (an SD1-layout checkpoint)."""

    # diffusers' UNet2DConditionModel and AutoencoderKL: Any, as in LoadedCheckpoint (diffusers'
    # types do not show their config and encode/decode to mypy)
    unet: Any
    vae: Any
    text_encoder: torch.nn.Module
    scheduler_config: dict
    vae_scaling_factor: float = 0.18215
    name: str = ""
    path: Path | None = None

    @classmethod
    def from_file(cls, path: Path) -> TrainingBase:
        """A checkpoint file through the model manager's loader (float32, CPU)."""
        from sdstudio.models.loader import load_checkpoint

        return cls.from_loaded(load_checkpoint(path), path)

    @classmethod
    def from_loaded(cls, loaded: LoadedCheckpoint, path: Path | None = None) -> TrainingBase:
        """From the model manager's LoadedCheckpoint (SD1/SD2 layouts: one text encoder)."""
        if loaded.text_encoder is None or loaded.text_encoder_2 is not None:
            raise InvalidRequest("base", "LoRA training supports SD1/SD2-layout checkpoints (one text encoder) for now")
        name = path.stem if path else loaded.path.stem
        return cls(
            loaded.unet,
            loaded.vae,
            loaded.text_encoder,
            dict(loaded.scheduler_config),
            float(loaded.vae_scaling_factor),
            name,
            path or loaded.path,
        )


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
    with Image.open(path) as opened:
        image = opened.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize(
            (resolution, resolution), Image.Resampling.LANCZOS
        )
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
def encode_latents(
    vae: Any, images: list[TrainingImage], resolution: int, scaling: float, batch: int = 8
) -> torch.Tensor:
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
        elif (
            conv
            and isinstance(module, torch.nn.Conv2d)
            and module.kernel_size == (3, 3)
            and (".resnets." in name or "samplers." in name)
        ):
            targets.append(name)
    return targets


def text_encoder_lora_targets(text_encoder: torch.nn.Module) -> list[str]:
    """kohya's text-encoder targets: the Linear layers of CLIP attention and MLP blocks."""
    return [
        n
        for n, m in text_encoder.named_modules()
        if isinstance(m, torch.nn.Linear) and (".self_attn." in n or ".mlp." in n)
    ]


def inject_lora(
    model: torch.nn.Module,
    targets: list[str],
    rank: int,
    alpha: float,
    generator: torch.Generator,
    conv_targets: Sequence[str] = (),
    conv_rank: int = 0,
    conv_alpha: float = 1.0,
) -> list[torch.nn.Parameter]:
    """peft LoRA adapters on `targets`; down ~ kaiming-uniform from `generator`, up = 0.

    Returns the trainable params.
    """
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    all_targets = list(targets) + list(conv_targets)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft types lora_alpha int; it only divides it by r
        target_modules=all_targets,
        lora_dropout=0.0,
        bias="none",
        rank_pattern={t: conv_rank for t in conv_targets},
        alpha_pattern={t: conv_alpha for t in conv_targets},
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = []
    for name in all_targets:
        layer = cast("LoraLayer", model.get_submodule(name))  # inject_adapter_in_model put it there
        # torch types module attributes as Tensor | Module; these are the adapter's Parameters
        down = cast(torch.nn.Parameter, layer.lora_A[ADAPTER].weight)
        up = cast(torch.nn.Parameter, layer.lora_B[ADAPTER].weight)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(down[0].numel())  # kaiming_uniform_(a=sqrt(5)), as kohya and peft
            down.copy_(torch.rand(down.shape, generator=generator) * 2 * bound - bound)
            up.zero_()
        down.requires_grad_(True)
        up.requires_grad_(True)
        params += [down, up]
    return params


def kohya_state_dict(model: torch.nn.Module, prefix: str, add_text_model: bool = False) -> dict[str, torch.Tensor]:
    """The injected adapters as kohya keys.

    `{prefix}{path_with_underscores}.lora_down.weight` / `.lora_up.weight` / `.alpha`.
    """
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


def load_kohya_state(
    model: torch.nn.Module, prefix: str, tensors: dict[str, torch.Tensor], add_text_model: bool = False
) -> int:
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


def training_metadata(
    config: LoraTrainingConfig,
    base: TrainingBase,
    images: list[TrainingImage],
    steps_done: int,
    started: float,
    session_id: str,
    base_hashes: tuple[str, str],
    batches_per_epoch: int,
) -> dict[str, str]:
    """kohya's `ss_*` metadata (all values strings, JSON for the nested ones)."""
    epochs = math.ceil(config.max_train_steps * config.gradient_accumulation_steps / max(1, batches_per_epoch))
    network_args = (
        {"conv_dim": str(config.conv_rank), "conv_alpha": str(config.conv_alpha)} if config.conv_rank else None
    )
    return {
        "ss_session_id": session_id,
        "ss_training_started_at": str(started),
        "ss_training_finished_at": str(time.time()),
        "ss_output_name": config.output_name,
        "ss_learning_rate": str(config.learning_rate),
        "ss_unet_lr": str(config.learning_rate),
        "ss_text_encoder_lr": str(config.text_encoder_lr or config.learning_rate)
        if config.train_text_encoder
        else "None",
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
# Samples (through the engine's sampler table, as generation makes images)
# --------------------------------------------------------------------------------------


@torch.no_grad()
def sample_images(
    base: TrainingBase,
    prompts: list[str],
    resolution: int,
    seed: int,
    steps: int = 20,
    cfg_scale: float = 7.0,
    sampler_name: str = "Euler",
    negative_prompt: str = "",
    height: int | None = None,
    token_ids: Callable[[list[str]], torch.Tensor] = caption_token_ids,
) -> list[Image.Image]:
    """Images of `prompts` on the current (LoRA-injected) model with classifier-free guidance, seed + i for prompt i.

    `resolution` is the width (and the height unless `height` is given); `token_ids` tokenizes
    (a trainer with new token vectors passes its own).
    """
    resolved = resolve_sampler_and_schedule(sampler_name, None)
    if resolved is None:
        raise InvalidRequest("sampler", f"unknown sampler {sampler_name!r}")
    sampler, schedule = resolved
    discrete = DiscreteSigmas.from_scheduler_config(base.scheduler_config)
    prediction_type = base.scheduler_config.get("prediction_type", "epsilon")
    device = next(base.unet.parameters()).device
    vae_dtype = next(base.vae.parameters()).dtype
    factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    shape = (int(base.unet.config.in_channels), (height or resolution) // factor, resolution // factor)
    images: list[Image.Image] = []
    for index, prompt in enumerate(prompts):  # one prompt at a time: training already holds much memory
        context = base.text_encoder(token_ids([prompt, negative_prompt]).to(device))[0]
        noise = ImageNoise(shape, [seed + index], device=device)
        job = SamplingJob(
            sampler=sampler,
            schedule=schedule,
            steps=steps,
            guided=GuidedUNet(base.unet, FixedConditioning(context[:1], context[1:]), cfg_scale),
            discrete=discrete,
            prediction_type=prediction_type,
            scheduler_config=base.scheduler_config,
            noise=noise.next,
            initial_noise=noise.first(),
            options=SamplerOptions(eta=sampler.default_eta),
        )
        latents = run_sampler(job) / base.vae_scaling_factor
        images += tensor_to_pil(base.vae.decode(latents.to(vae_dtype)).sample)
    return images


# --------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------


def noise_prediction_loss(
    unet: Any,
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    context: torch.Tensor,
    generator: torch.Generator,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE of the UNet's epsilon prediction on `x0` noised at t ~ U[0, T) (noise and t from `generator`).

    `weight` ([B, 1, H, W], mean 1) weighs the per-pixel error, as A1111's "use alpha as loss weight".
    """
    device = next(unet.parameters()).device
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=generator)
    a = alphas_cumprod[t].float().view(-1, 1, 1, 1).to(x0.device)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = unet(noisy.to(device), t.to(device), encoder_hidden_states=context.to(device)).sample
    if weight is None:
        return F.mse_loss(pred.float(), noise.to(device).float())
    return (((pred.float() - noise.to(device).float()) ** 2) * weight.to(device)).mean()


class EpochOrder:
    """Shuffled image order per epoch (seeded by seed + epoch), with a resumable position (shared by the trainers)."""

    def __init__(self, repeated: list[int], seed: int, epoch: int = 0, position: int = 0):
        self.repeated, self.seed, self.epoch, self.position = repeated, seed, epoch, position
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        perm = torch.randperm(len(self.repeated), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return [self.repeated[i] for i in perm.tolist()]

    def take(self, count: int) -> list[int]:
        batch: list[int] = []
        while len(batch) < count:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffle()
            batch.append(self._order[self.position])
            self.position += 1
        return batch


@dataclass
class LoraTrainingState:
    """Where a run stands: steps done, their losses, the data position and the noise generator (state.json)."""

    step: int
    losses: list[float]
    order: EpochOrder
    generator: torch.Generator

    @classmethod
    def start(cls, repeated: list[int], seed: int) -> LoraTrainingState:
        """Step 0: the first epoch's order and a generator seeded with `seed`."""
        return cls(0, [], EpochOrder(repeated, seed), torch.Generator().manual_seed(seed))

    def to_json(self, config: Any) -> dict[str, Any]:  # the run's config dataclass (LoRA, hypernetwork)
        """The state.json contents (with the run's config, for people reading it)."""
        return {
            "step": self.step,
            "losses": self.losses,
            "epoch": self.order.epoch,
            "position": self.order.position,
            "generator_state": self.generator.get_state().tolist(),
            "config": asdict(config),
        }

    def restore(self, info: dict[str, Any]) -> None:
        """Continue from a saved state.json."""
        self.step, self.losses = int(info["step"]), list(info["losses"])
        self.order = EpochOrder(self.order.repeated, self.order.seed, int(info["epoch"]), int(info["position"]))
        self.generator.set_state(torch.tensor(info["generator_state"], dtype=torch.uint8))


class LoraTrainer:
    """One LoRA training run over `base`: adapters go in on construction and come out when `train()` ends."""

    def __init__(
        self,
        base: TrainingBase,
        images: list[TrainingImage],
        config: LoraTrainingConfig,
        output_dir: Path,
        state_dir: Path | None = None,
        samples_dir: Path | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ):
        from diffusers import DDPMScheduler

        config.check()
        self.began = time.monotonic()
        self.base, self.images, self.config = base, images, config
        self.output_dir, self.state_dir, self.samples_dir, self.on_step = output_dir, state_dir, samples_dir, on_step
        output_dir.mkdir(parents=True, exist_ok=True)
        self.started, self.session_id = time.time(), str(uuid.uuid4())
        self.base_hashes = (
            (legacy_model_hash(base.path), sha256_of_file(base.path)) if base.path and base.path.is_file() else ("", "")
        )
        self.add_text_model = not hasattr(base.text_encoder, "text_model")
        self.sample_paths: list[Path] = []

        # Step 1: data, encoded once (captions too, unless the text encoder trains)
        self.latents = encode_latents(base.vae, images, config.resolution, base.vae_scaling_factor)
        self.token_ids = caption_token_ids([image.caption for image in images])
        self.cached_context = None if config.train_text_encoder else self._encode_captions()
        repeated = [i for i, image in enumerate(images) for _ in range(image.repeats)]
        self.batches_per_epoch = math.ceil(len(repeated) / config.train_batch_size)
        self.state = LoraTrainingState.start(repeated, config.seed)

        # Step 2: networks; their init draws from the state's generator before any training noise
        self.optimizer = torch.optim.AdamW(self._inject_networks())
        noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
        self.alphas_cumprod = noise_scheduler.alphas_cumprod
        self.num_timesteps = int(noise_scheduler.config.num_train_timesteps)
        self.device = next(base.unet.parameters()).device

    @torch.no_grad()
    def _encode_captions(self) -> torch.Tensor:
        encoder = self.base.text_encoder
        ids = self.token_ids.to(next(encoder.parameters()).device)
        return torch.cat([encoder(ids[i : i + 16])[0] for i in range(0, len(ids), 16)])

    def _inject_networks(self) -> list[dict[str, Any]]:
        """LoRA adapters into the UNet (and the text encoder when it trains); the optimizer's parameter groups."""
        base, config, generator = self.base, self.config, self.state.generator
        unet_targets = unet_lora_targets(base.unet)
        conv_targets = (
            [t for t in unet_lora_targets(base.unet, conv=True) if t not in unet_targets] if config.conv_rank else []
        )
        unet_params = inject_lora(
            base.unet,
            unet_targets,
            config.rank,
            config.network_alpha,
            generator,
            conv_targets,
            config.conv_rank,
            config.conv_alpha,
        )
        groups = [{"params": unet_params, "lr": config.learning_rate}]
        if config.train_text_encoder:
            te_params = inject_lora(
                base.text_encoder,
                text_encoder_lora_targets(base.text_encoder),
                config.rank,
                config.network_alpha,
                generator,
            )
            groups.append({"params": te_params, "lr": config.text_encoder_lr or config.learning_rate})
        return groups

    def remove_networks(self) -> None:
        """Take the adapters out again, leaving the base model as it was."""
        remove_lora(self.base.unet)
        if self.config.train_text_encoder:
            remove_lora(self.base.text_encoder)

    # -- files ---------------------------------------------------------------------------

    def network_tensors(self) -> dict[str, torch.Tensor]:
        """The current adapters as kohya tensors (`lora_unet_*`, `lora_te_*`)."""
        tensors = kohya_state_dict(self.base.unet, "lora_unet_")
        if self.config.train_text_encoder:
            tensors.update(kohya_state_dict(self.base.text_encoder, "lora_te_", self.add_text_model))
        return tensors

    def save_lora(self, path: Path) -> None:
        """The adapters as a kohya LoRA file with `ss_*` metadata, written atomically."""
        from safetensors.torch import save, save_file

        tensors = self.network_tensors()
        metadata = training_metadata(
            self.config,
            self.base,
            self.images,
            self.state.step,
            self.started,
            self.session_id,
            self.base_hashes,
            self.batches_per_epoch,
        )
        metadata["sshs_model_hash"] = addnet_hash_safetensors_bytes(save(tensors))
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    def save_state(self) -> None:
        """Adapter weights, optimizer and state.json into `state_dir` (nothing without one)."""
        from safetensors.torch import save_file

        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_dir / STATE_WEIGHTS) as tmp:
            save_file(self.network_tensors(), str(tmp))
        with atomic_path(self.state_dir / STATE_OPTIMIZER) as tmp:
            torch.save(self.optimizer.state_dict(), tmp)
        atomic_write_bytes(self.state_dir / STATE_INFO, json.dumps(self.state.to_json(self.config)).encode("utf-8"))

    def load_state(self) -> bool:
        """Continue from the state saved in `state_dir`, if there is one; returns whether there was."""
        from safetensors.torch import load_file

        if self.state_dir is None or not (self.state_dir / STATE_INFO).is_file():
            return False
        info = json.loads((self.state_dir / STATE_INFO).read_text())
        saved = load_file(str(self.state_dir / STATE_WEIGHTS))
        load_kohya_state(self.base.unet, "lora_unet_", saved)
        if self.config.train_text_encoder:
            load_kohya_state(self.base.text_encoder, "lora_te_", saved, self.add_text_model)
        self.optimizer.load_state_dict(torch.load(self.state_dir / STATE_OPTIMIZER, weights_only=True))
        self.state.restore(info)
        return True

    def save_samples(self) -> None:
        """Render the sample prompts into `samples_dir` as `{output_name}_{step}_{index}.png`."""
        config = self.config
        if not config.sample_prompts or self.samples_dir is None:
            return
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        was_training = self.base.unet.training
        self.base.unet.eval()
        images = sample_images(
            self.base,
            config.sample_prompts,
            config.resolution,
            config.seed,
            config.sample_steps,
            config.sample_cfg_scale,
        )
        self.base.unet.train(was_training)
        for i, image in enumerate(images):
            path = self.samples_dir / f"{config.output_name}_{self.state.step:06d}_{i:02d}.png"
            with atomic_path(path) as tmp:
                image.save(tmp, format="PNG")
            self.sample_paths.append(path)

    # -- training ------------------------------------------------------------------------

    def step(self) -> float:
        """One optimizer step over `gradient_accumulation_steps` batches; returns its loss."""
        config, state = self.config, self.state
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(config.gradient_accumulation_steps):
            total += self._backward(state.order.take(config.train_batch_size))
        self.optimizer.step()
        state.step += 1
        state.losses.append(total)
        return total

    def _backward(self, picks: list[int]) -> float:
        """Epsilon-prediction loss of one batch, back-propagated; returns its share of the step's loss."""
        if self.cached_context is not None:
            context = self.cached_context[picks]
        else:
            context = self.base.text_encoder(
                self.token_ids[picks].to(next(self.base.text_encoder.parameters()).device)
            )[0]
        loss = noise_prediction_loss(
            self.base.unet, self.alphas_cumprod, self.latents[picks], context, self.state.generator
        )
        loss = loss / self.config.gradient_accumulation_steps
        loss.backward()
        return float(loss.detach())

    def _save_on_the_way(self) -> None:
        """The numbered LoRA, the state and the samples due at this step (the last step saves in `train`)."""
        config, step = self.config, self.state.step
        if step >= config.max_train_steps:
            return
        if config.save_every and step % config.save_every == 0:
            self.save_lora(self.output_dir / f"{config.output_name}-step{step:08d}.safetensors")
            self.save_state()
        if config.sample_every and step % config.sample_every == 0:
            self.save_samples()

    def train(self, progress_bar: bool = True) -> LoraTrainingResult:
        """Step to `max_train_steps`, save the LoRA, state and samples, and take the adapters out (call once)."""
        config, state = self.config, self.state
        resumed_from = state.step
        bar = None
        if progress_bar:
            from tqdm import tqdm

            bar = tqdm(
                total=config.max_train_steps, initial=state.step, desc=f"train-lora {config.output_name}", unit="step"
            )
        try:
            # Step 3: the loop
            self.base.unet.train()
            while state.step < config.max_train_steps:
                loss = self.step()
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}")
                    bar.update(1)
                if self.on_step is not None:
                    self.on_step(state.step, loss)
                self._save_on_the_way()
            self.base.unet.eval()
            # Step 4: files
            final = self.output_dir / f"{config.output_name}.safetensors"
            self.save_lora(final)
            self.save_state()
            self.save_samples()
        finally:
            if bar is not None:
                bar.close()
            self.remove_networks()
        return LoraTrainingResult(
            final, state.step, state.losses, self.sample_paths, time.monotonic() - self.began, resumed_from
        )


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
    trainer = LoraTrainer(base, images, config, output_dir, state_dir, samples_dir, on_step)
    if resume:
        trainer.load_state()
    return trainer.train(progress_bar)
