"""Training an A1111 hypernetwork on a folder of captioned images, resumable, into its own `.pt`.

As A1111's `train_hypernetwork` (modules/hypernetworks/hypernetwork.py): the hypernetwork is hooked
into the UNet's attention with multiplier 1 and its modules in training mode (dropout on), the
model itself frozen; each step is `gradient_step` batches of `batch_size` of epsilon-prediction
loss (as LoRA training: t ~ U[0, T), MSE to the noise), then an AdamW step; `step` in the file
counts optimizer steps, so training continues from the file's step up to `steps`. Every
`save_every` steps, and at the end (also when interrupted), the `.pt` is written with beside it
A1111's `NAME.pt.optim` (optimizer_name, hash = the `.pt`'s short sha256, optimizer_state_dict).

Data: the images of `training/lora_dataset.py` (captions from `.txt` files; an image without one
is captioned with the hypernetwork's name); A1111's prompt templates are not read yet.

Exact resume: noise, timesteps and dropout draw from one generator whose state goes into
`state.json` in `state_dir` with the data position, so a run continued from a save ends with the
same weights as one that never stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from sdstudio.config import atomic_path, atomic_write_bytes
from sdstudio.errors import InvalidRequest
from sdstudio.models.hashes import sha256_of_file
from sdstudio.training.lora_dataset import TrainingImage
from sdstudio.training.lora_training import (
    LoraTrainingState,
    TrainingBase,
    caption_token_ids,
    encode_latents,
    noise_prediction_loss,
)

STATE_INFO = "state.json"
OPTIMIZER_NAME = "AdamW"
MAX_BATCH = 256  # latents of a batch are gathered at once


class TrainableHypernetwork(Protocol):
    """What training needs of a hypernetwork (extensions.hypernetwork's Hypernetwork, given by the caller)."""

    name: str
    step: int

    def parameters(self) -> list[torch.nn.Parameter]: ...
    def train(self, mode: bool = True) -> None: ...
    def eval(self) -> None: ...
    def to(self, device: torch.device | str) -> Any: ...
    def save(self, path: Path, replace: bool = True) -> None: ...


AttachToUnet = Callable[[Any], AbstractContextManager[Any]]
"""`attach(unet)`: a context manager that hooks the hypernetwork (multiplier 1) into the UNet for its block."""


@dataclass
class HypernetworkTrainingConfig:
    """A1111's train_hypernetwork parameters this trainer uses (its names; `resolution` is training_width)."""

    learn_rate: float = 1e-5
    batch_size: int = 1
    gradient_step: int = 1
    steps: int = 100_000
    resolution: int = 512
    save_every: int = 500  # save_hypernetwork_every; 0: only at the end
    seed: int = 0

    def check(self) -> None:
        """InvalidRequest naming A1111's field for a value training cannot use."""
        for name in ("batch_size", "gradient_step", "steps"):
            if int(getattr(self, name)) < 1:
                raise InvalidRequest(name, "must be at least 1")
        if self.batch_size > MAX_BATCH:
            raise InvalidRequest("batch_size", f"at most {MAX_BATCH} (use gradient_step for larger effective batches)")
        if not 8 <= self.resolution <= 4096 or self.resolution % 8:
            raise InvalidRequest("training_width", "must be a multiple of 8 between 8 and 4096")
        if not math.isfinite(self.learn_rate) or self.learn_rate <= 0:
            raise InvalidRequest("learn_rate", "must be a positive number such as 0.00001")
        if self.save_every < 0:
            raise InvalidRequest("save_hypernetwork_every", "must be 0 (only at the end) or more")


@dataclass
class HypernetworkTrainingResult:
    """Where the hypernetwork went and how training went."""

    path: Path
    steps: int
    losses: list[float]
    seconds: float
    resumed_from: int
    interrupted: bool = False


def optimizer_file(path: Path) -> Path:
    """A1111's optimizer file beside a hypernetwork: `NAME.pt.optim`."""
    return path.with_name(path.name + ".optim")


def short_hash(path: Path) -> str:
    """A1111's hypernetwork short hash: the first 10 hex digits of the file's sha256."""
    return sha256_of_file(path)[:10]


class HypernetworkTrainer:
    """One training run of `net`, read from and saved to `path`, over `base` (whose weights never change)."""

    def __init__(
        self,
        base: TrainingBase,
        images: list[TrainingImage],
        net: TrainableHypernetwork,
        path: Path,
        attach: AttachToUnet,
        config: HypernetworkTrainingConfig,
        state_dir: Path | None = None,
        on_step: Callable[[int, float], None] | None = None,
        interrupted: Callable[[], bool] | None = None,
    ):
        from diffusers import DDPMScheduler

        config.check()
        self.began = time.monotonic()
        self.base, self.config, self.path, self.state_dir = base, config, Path(path), state_dir
        self.on_step, self.interrupted = on_step, interrupted or (lambda: False)
        self.net, self.attach = net, attach
        self.latents = encode_latents(base.vae, images, config.resolution, base.vae_scaling_factor)
        self.context = self._encode([image.caption or self.net.name for image in images])
        repeated = [i for i, image in enumerate(images) for _ in range(image.repeats)]
        self.state = LoraTrainingState.start(repeated, config.seed)
        self.state.step = self.net.step
        self.resumed_from = self.net.step
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=config.learn_rate)
        self.alphas_cumprod = DDPMScheduler.from_config(base.scheduler_config).alphas_cumprod
        self.device = next(base.unet.parameters()).device

    @torch.no_grad()
    def _encode(self, captions: list[str]) -> torch.Tensor:
        encoder = self.base.text_encoder
        ids = caption_token_ids(captions).to(next(encoder.parameters()).device)
        return torch.cat([encoder(ids[i : i + 16])[0] for i in range(0, len(ids), 16)]).float()

    # -- files ---------------------------------------------------------------------------

    def save(self, path: Path | None = None) -> Path:
        """The hypernetwork at this step, its `.optim` and (with a state_dir) the run's state.json."""
        target = path or self.path
        self.net.step = self.state.step
        self.net.save(target)
        optimizer = {
            "optimizer_name": OPTIMIZER_NAME,
            "hash": short_hash(target),
            "optimizer_state_dict": self.optimizer.state_dict(),
        }
        with atomic_path(optimizer_file(target)) as tmp:
            torch.save(optimizer, tmp)
        if self.state_dir is not None and path is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            info = {**self.state.to_json(self.config), "hash": short_hash(target)}
            atomic_write_bytes(self.state_dir / STATE_INFO, json.dumps(info).encode("utf-8"))
        return target

    def load_state(self) -> bool:
        """Continue the optimizer (and, with the run's state.json, the data order and noise) the file was saved with.

        A1111 takes the `.optim` only when its hash is the `.pt`'s; state.json likewise. Returns whether
        the run continues exactly.
        """
        from sdstudio.models.safe_pickle import safe_load

        current = short_hash(self.path)
        saved_optimizer = optimizer_file(self.path)
        if saved_optimizer.is_file():
            optim = safe_load(saved_optimizer)
            if isinstance(optim, dict) and optim.get("hash") == current and optim.get("optimizer_state_dict"):
                self.optimizer.load_state_dict(optim["optimizer_state_dict"])
        info_path = self.state_dir / STATE_INFO if self.state_dir is not None else None
        if info_path is None or not info_path.is_file():
            return False
        info = json.loads(info_path.read_text())
        if info.get("hash") != current or int(info.get("step", -1)) != self.net.step:
            return False
        self.state.restore(info)
        return True

    # -- training ------------------------------------------------------------------------

    def step(self) -> float:
        """One optimizer step over `gradient_step` batches; returns its loss."""
        config, state = self.config, self.state
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        # Dropout draws from torch's global generator: seed it from ours, inside a fork, so a
        # resumed run drops the same units and the process's own generator is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=state.generator)))
            for _ in range(config.gradient_step):
                picks = state.order.take(config.batch_size)
                loss = noise_prediction_loss(
                    self.base.unet, self.alphas_cumprod, self.latents[picks], self.context[picks], state.generator
                )
                loss = loss / config.gradient_step
                loss.backward()
                total += float(loss.detach())
        self.optimizer.step()
        state.step += 1
        state.losses.append(total)
        return total

    def train(self) -> HypernetworkTrainingResult:
        """Step up to `steps` (or until interrupted), saving on the way and at the end."""
        config, state, unet = self.config, self.state, self.base.unet
        grads = {name: p.requires_grad for name, p in unet.named_parameters()}
        unet.requires_grad_(False)
        interrupted = False
        try:
            with self.attach(unet):
                self.net.train()
                while state.step < config.steps:
                    if self.interrupted():
                        interrupted = True
                        break
                    loss = self.step()
                    if self.on_step is not None:
                        self.on_step(state.step, loss)
                    if config.save_every and state.step % config.save_every == 0 and state.step < config.steps:
                        self.save()
        finally:
            self.net.eval()
            for name, parameter in unet.named_parameters():
                parameter.requires_grad_(grads[name])
        self.net.to("cpu")
        self.save()
        return HypernetworkTrainingResult(
            self.path, state.step, state.losses, time.monotonic() - self.began, self.resumed_from, interrupted
        )


def train_hypernetwork(
    base: TrainingBase,
    images: list[TrainingImage],
    net: TrainableHypernetwork,
    path: Path,
    attach: AttachToUnet,
    config: HypernetworkTrainingConfig,
    state_dir: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> HypernetworkTrainingResult:
    """Train `net` (read from `path`) on `images` over `base`, continuing from the step it was saved at."""
    trainer = HypernetworkTrainer(base, images, net, path, attach, config, state_dir, on_step, interrupted)
    trainer.load_state()
    return trainer.train()


def training_base_of(model: Any) -> TrainingBase:
    """A TrainingBase over the engine's loaded model (SD1/SD2 layouts: one text encoder)."""
    encoders = list(model.encoder.text_encoders)
    if len(encoders) != 1:
        raise InvalidRequest("hypernetwork_name", "hypernetwork training supports SD1/SD2-layout models for now")
    return TrainingBase(
        model.unet, model.vae, encoders[0], dict(model.scheduler_config), float(model.vae_scaling_factor), model.name
    )
