"""Training the bundled tiny model from scratch: VAE, UNet + text encoder, decoder, refinement.

The run has four phases, each resumable from `OUT/state.pt` (written atomically every
`save_every` steps):

1. ``vae``: the `AutoencoderKL` learns to reconstruct scenes. Latents are the posterior mean
   plus a little noise (near-deterministic; far faster to learn than full posterior samples)
   with a tiny KL weight. At the end the latent standard deviation fixes `scale_factor`.
2. ``unet``: the UNet and the CLIP text transformer learn epsilon-prediction on the SD1 noise
   schedule (so every A1111 sampler applies), with min-SNR loss weighting, caption dropout
   for classifier-free guidance, and an EMA of both; the EMA weights are what ships.
3. ``decoder``: the decoder is fine-tuned with the encoder frozen, so the latent space the UNet
   learned stays the same while reconstructions get cleaner.
4. ``refine``: the UNet and text encoder continue at a low learning rate with low-frequency noise, so
   the colours of an image follow the prompt rather than broad patterns of the seed's noise.

Every batch is drawn from the procedural scene generator from (seed, phase, step) alone, and
every noise tensor from a generator seeded the same way, so a resumed run sees exactly the data
an uninterrupted one would. Sample grids go to `OUT/samples/`, the exported checkpoint (LDM
single-file layout + yaml, through the model manager's saver) to `OUT/sdstudio-tiny.safetensors`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sdstudio.config import atomic_path
from sdstudio.errors import InvalidRequest
from sdstudio.models.devices import resolve_device
from sdstudio.training import scenes
from sdstudio.training.tiny_model import SCHEDULER_CONFIG, build_components, tiny_ldm_config

STATE_FILE = "state.pt"
LOG_FILE = "train.log"
CHECKPOINT_NAME = "sdstudio-tiny.safetensors"
PHASES = ("vae", "unet", "decoder", "refine", "done")

# Fixed prompts of the sample grids: seen and held-out combinations, with and without extras.
SAMPLE_PROMPTS = (
    "a red circle on a blue background",
    "a white triangle on a black background",
    "a green square on a yellow background",
    "a small yellow circle at the top left on a red background",
    "a large blue triangle on a white background",
    *(scenes.caption_for(*combo) for combo in scenes.HELD_OUT_LIST[:3]),
)


@dataclass
class BaseTrainingConfig:
    """Hyperparameters of a train-base run (saved in the state; a resumed run keeps its seed and sizes)."""

    out_dir: Path
    unet_steps: int = 9500
    vae_steps: int = 800
    decoder_steps: int = 2250
    refine_steps: int = 1500
    batch_size: int = 32
    vae_batch_size: int = 16
    learning_rate: float = 1e-3
    vae_learning_rate: float = 2e-3
    warmup_steps: int = 200
    refine_learning_rate: float = 2e-4
    refine_warmup_steps: int = 50
    low_frequency_noise: float = 0.1
    seed: int = 0
    save_every: int = 100
    sample_every: int = 1000
    sample_steps: int = 20
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    device: str = "auto"
    architecture: dict[str, Any] = field(default_factory=tiny_ldm_config)

    def check(self) -> None:
        """Reject impossible values, naming the option."""
        for name in ("unet_steps", "vae_steps", "decoder_steps", "refine_steps"):
            if int(getattr(self, name)) < 0:
                raise InvalidRequest(name.replace("_", "-"), "must be 0 or more")
        for name in ("batch_size", "vae_batch_size", "save_every"):
            if int(getattr(self, name)) < 1:
                raise InvalidRequest(name.replace("_", "-"), "must be at least 1")
        if self.learning_rate <= 0 or self.vae_learning_rate <= 0 or self.refine_learning_rate <= 0:
            raise InvalidRequest("learning-rate", "must be positive")
        if self.low_frequency_noise < 0:
            raise InvalidRequest("low-frequency-noise", "must be 0 or more")


@dataclass
class BaseTrainingResult:
    """What a run produced."""

    checkpoint: Path
    steps: dict[str, int]
    seconds: float
    sample_grids: list[Path]


def _phase_seed(seed: int, phase: str, step: int) -> list[int]:
    return [int(seed), PHASES.index(phase), int(step)]


def _noise_generator(seed: int, phase: str, step: int) -> torch.Generator:
    """A CPU generator determined by (seed, phase, step), so resumed runs draw the same noise."""
    return torch.Generator().manual_seed(
        int(np.random.default_rng(_phase_seed(seed, phase, step) + [1]).integers(2**62))
    )


def _scene_batch(seed: int, phase: str, step: int, count: int) -> list[scenes.Scene]:
    return scenes.scene_batch(seed * 10 + PHASES.index(phase), step, count, "train")


def training_captions(batch: list[scenes.Scene], rng: np.random.Generator, dropout: float) -> list[str]:
    """Captions with the size and position phrases each included half the time; `dropout` of them empty."""
    captions = []
    for scene in batch:
        if rng.random() < dropout:
            captions.append("")
        else:
            captions.append(scene.caption(with_size=rng.random() < 0.5, with_position=rng.random() < 0.5))
    return captions


class _Run:
    """One training run's models, optimizers and state file."""

    def __init__(self, config: BaseTrainingConfig, log: Callable[[str], None]):
        self.config = config
        self.out = Path(config.out_dir)
        self.log = log
        self.device = torch.device(resolve_device(config.device))
        components = build_components(config.architecture, seed=config.seed)
        self.architecture = components.config
        self.vae = components.vae.to(self.device)
        self.text_encoder = components.text_encoder.to(self.device)
        self.unet = components.unet.to(self.device)
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.ema_text_encoder = copy.deepcopy(self.text_encoder).requires_grad_(False)
        self.scale_factor = 1.0
        self.phase = "vae"
        self.step = 0
        self.steps_done = {phase: 0 for phase in PHASES[:-1]}
        self.optimizer_state: dict | None = None
        self.sample_grids: list[Path] = []

    # -- state ---------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def save_state(self, optimizer: torch.optim.Optimizer | None) -> None:
        state = {
            "format": 1,
            "phase": self.phase,
            "step": self.step,
            "steps_done": dict(self.steps_done),
            "scale_factor": self.scale_factor,
            "seed": self.config.seed,
            "architecture": self.architecture,
            "vae": self.vae.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "unet": self.unet.state_dict(),
            "ema_unet": self.ema_unet.state_dict(),
            "ema_text_encoder": self.ema_text_encoder.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
        }
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def load_state(self) -> None:
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        if state.get("seed") != self.config.seed:
            self.log(f"note: resuming a run made with seed {state.get('seed')} (the --seed given is ignored)")
        self.config.seed = int(state["seed"])
        if state["architecture"] != self.architecture:
            components = build_components(state["architecture"], seed=self.config.seed)
            self.architecture = components.config
            self.vae, self.text_encoder, self.unet = (
                m.to(self.device) for m in (components.vae, components.text_encoder, components.unet)
            )
            self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
            self.ema_text_encoder = copy.deepcopy(self.text_encoder).requires_grad_(False)
        self.vae.load_state_dict(state["vae"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.unet.load_state_dict(state["unet"])
        self.ema_unet.load_state_dict(state["ema_unet"])
        self.ema_text_encoder.load_state_dict(state["ema_text_encoder"])
        self.phase, self.step = state["phase"], int(state["step"])
        self.steps_done = {phase: 0 for phase in PHASES[:-1]} | dict(state["steps_done"])  # older states lack "refine"
        self.scale_factor = float(state["scale_factor"])
        self.optimizer_state = state["optimizer"]

    def _restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
            self.optimizer_state = None

    def _next_phase(self, phase: str) -> None:
        # A phase already (partly) done, as when a finished run is extended, continues where it stopped.
        self.phase, self.step, self.optimizer_state = phase, self.steps_done.get(phase, 0), None
        self.save_state(None)

    def extend_finished(self) -> str | None:
        """Reopen a finished run whose decoder or refine phase has more steps configured than it did.

        Both only continue what the earlier phases made (the decoder needs only the frozen
        encoder, refinement only the UNet), so they can be lengthened after the fact; the
        optimizer starts afresh. Returns the phase reopened.
        """
        if self.phase != "done":
            return None
        for phase in ("decoder", "refine"):
            if self.steps_done[phase] < getattr(self.config, f"{phase}_steps"):
                self._next_phase(phase)
                return phase
        return None

    # -- phases --------------------------------------------------------------------------

    def _images(self, phase: str, step: int, count: int) -> torch.Tensor:
        batch = _scene_batch(self.config.seed, phase, step, count)
        return scenes.images_to_tensor([s.render() for s in batch]).to(self.device)

    def train_vae(self) -> None:
        config, vae = self.config, self.vae
        optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate)
        self._restore_optimizer(optimizer)
        vae.train()
        timer = _StepTimer()
        while self.step < config.vae_steps:
            lr = config.vae_learning_rate * (0.1 + 0.9 * (1 - self.step / config.vae_steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = self._images("vae", self.step, config.vae_batch_size)
            generator = _noise_generator(config.seed, "vae", self.step)
            posterior = vae.encode(x).latent_dist
            latents = posterior.mean + 0.05 * torch.randn(posterior.mean.shape, generator=generator).to(self.device)
            reconstruction = vae.decode(latents).sample
            kl = posterior.kl().mean()
            loss = F.l1_loss(reconstruction, x) + F.mse_loss(reconstruction, x) + 1e-6 * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.step += 1
            self.steps_done["vae"] = self.step
            self._report("vae", loss.item(), lr, timer, extra=f"kl {kl.item():.1f}")
            if self.step % config.save_every == 0 or self.step == config.vae_steps:
                self.save_state(optimizer)
        vae.eval()
        with torch.no_grad():
            latents = torch.cat([vae.encode(self._images("vae", 10**6 + i, 32)).latent_dist.mean for i in range(8)])
        self.scale_factor = float(1.0 / latents.std())
        self.log(f"vae done: latent std {float(latents.std()):.4f}, scale_factor {self.scale_factor:.5f}")
        self._next_phase("unet")

    def train_unet(self) -> None:
        """Phase 2: the UNet and text encoder from their random init, warmup then cosine decay."""
        config = self.config
        self._train_denoiser("unet", config.unet_steps, config.learning_rate, config.warmup_steps, low_frequency=0.0)
        self._next_phase("decoder")

    def train_refine(self) -> None:
        """Phase 4: the trained UNet and text encoder continue at a low learning rate with low-frequency noise.

        Low-frequency noise (offset noise and coarse grids, see `_training_noise`) stops the model
        from reading an image's colours off broad patterns of the noise: on 16x16 latents such
        patterns are strong enough that some seeds otherwise pull every prompt towards a dark
        frame. It comes after the decoder phase (which needs only the frozen encoder), so a finished
        run can be refined by `--resume` with refine steps and ends where a straight run would.
        """
        config = self.config
        self._train_denoiser(
            "refine",
            config.refine_steps,
            config.refine_learning_rate,
            config.refine_warmup_steps,
            low_frequency=config.low_frequency_noise,
        )
        self._next_phase("done")

    def _train_denoiser(self, phase: str, steps: int, peak_lr: float, warmup: int, low_frequency: float) -> None:
        from diffusers import DDPMScheduler

        from sdstudio.training.lora_training import caption_token_ids

        config, unet, text_encoder = self.config, self.unet, self.text_encoder
        self.vae.eval().requires_grad_(False)
        alphas_cumprod = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod.to(self.device)
        parameters = list(unet.parameters()) + list(text_encoder.parameters())
        optimizer = torch.optim.AdamW(parameters, lr=peak_lr, weight_decay=0.01)
        self._restore_optimizer(optimizer)
        unet.train()
        text_encoder.train()
        timer = _StepTimer()
        while self.step < steps:
            lr = _warmup_cosine(self.step, steps, warmup, peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = _scene_batch(config.seed, phase, self.step, config.batch_size)
            rng = np.random.default_rng(_phase_seed(config.seed, phase, self.step))
            captions = training_captions(batch, rng, config.caption_dropout)
            generator = _noise_generator(config.seed, phase, self.step)
            with torch.no_grad():
                x = scenes.images_to_tensor([s.render() for s in batch]).to(self.device)
                latents = self.vae.encode(x).latent_dist.mean * self.scale_factor
            noise = _training_noise(latents.shape, generator, low_frequency).to(self.device)
            timesteps = torch.randint(0, len(alphas_cumprod), (latents.shape[0],), generator=generator).to(self.device)
            alpha = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
            noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
            context = text_encoder(caption_token_ids(captions).to(self.device))[0]
            prediction = unet(noisy, timesteps, encoder_hidden_states=context).sample
            # min-SNR weighting (Hang et al. 2023) for epsilon prediction: min(SNR, gamma) / SNR.
            snr = (alpha / (1 - alpha)).view(-1)
            weight = torch.clamp(snr, max=config.min_snr_gamma) / snr
            loss = (weight * ((prediction - noise) ** 2).mean(dim=(1, 2, 3))).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            # The EMA warms up over the first UNet steps only; refinement continues it at full decay.
            ema_step = self.step + (self.steps_done["unet"] if phase == "refine" else 0)
            decay = min(config.ema_decay, (1 + ema_step) / (10 + ema_step))
            with torch.no_grad():
                for ema, live in ((self.ema_unet, unet), (self.ema_text_encoder, text_encoder)):
                    for e, p in zip(ema.parameters(), live.parameters()):
                        e.lerp_(p, 1 - decay)
            self.step += 1
            self.steps_done[phase] = self.step
            self._report(phase, loss.item(), lr, timer)
            if self.step % config.save_every == 0 or self.step == steps:
                self.save_state(optimizer)
            if config.sample_every and self.step % config.sample_every == 0 and self.step < steps:
                self.write_samples()
                self.export()
        unet.eval()
        text_encoder.eval()

    def train_decoder(self) -> None:
        config, vae = self.config, self.vae
        vae.requires_grad_(False)
        parameters = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
        for p in parameters:
            p.requires_grad_(True)
        base_lr = config.vae_learning_rate / 2
        optimizer = torch.optim.AdamW(parameters, lr=base_lr)
        self._restore_optimizer(optimizer)
        vae.train()
        timer = _StepTimer()
        while self.step < config.decoder_steps:
            lr = base_lr * (0.1 + 0.9 * (1 - self.step / config.decoder_steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = self._images("decoder", self.step, config.vae_batch_size)
            generator = _noise_generator(config.seed, "decoder", self.step)
            with torch.no_grad():
                latents = vae.encode(x).latent_dist.mean
            latents = latents + 0.02 * torch.randn(latents.shape, generator=generator).to(self.device)
            reconstruction = vae.decode(latents).sample
            loss = F.l1_loss(reconstruction, x) + F.mse_loss(reconstruction, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.step += 1
            self.steps_done["decoder"] = self.step
            self._report("decoder", loss.item(), lr, timer)
            if self.step % config.save_every == 0 or self.step == config.decoder_steps:
                self.save_state(optimizer)
        vae.eval().requires_grad_(False)
        self._next_phase("refine")

    # -- outputs -------------------------------------------------------------------------

    def _report(self, phase: str, loss: float, lr: float, timer: _StepTimer, extra: str = "") -> None:
        seconds = timer.tick()
        if self.step % 20 == 0 or self.step == 1:
            self.log(f"{phase} {self.step} loss {loss:.4f} lr {lr:.2e} {seconds:.2f}s/step {extra}".rstrip())

    def _sampling_base(self):
        from sdstudio.training.lora_training import TrainingBase

        return TrainingBase(
            self.ema_unet, self.vae, self.ema_text_encoder, dict(SCHEDULER_CONFIG), self.scale_factor, "sdstudio-tiny"
        )

    def write_samples(self) -> Path:
        """A grid of the sample prompts (columns) at two seeds (rows), upscaled 2x for viewing."""
        from PIL import Image

        from sdstudio.training.lora_training import sample_images

        base = self._sampling_base()
        rows = [
            sample_images(
                base, list(SAMPLE_PROMPTS), scenes.IMAGE_SIZE, seed=1000 * row, steps=self.config.sample_steps
            )
            for row in range(2)
        ]
        size = scenes.IMAGE_SIZE
        grid = Image.new("RGB", (size * len(SAMPLE_PROMPTS), size * len(rows)))
        for r, images in enumerate(rows):
            for c, image in enumerate(images):
                grid.paste(image, (c * size, r * size))
        grid = grid.resize((grid.width * 2, grid.height * 2), Image.Resampling.NEAREST)
        path = self.out / "samples" / f"{self.phase}_{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            grid.save(tmp, format="PNG")
        self.sample_grids.append(path)
        self.log(f"samples: {path}")
        return path

    def export(self) -> Path:
        """The EMA model as an LDM single-file checkpoint (fp16) with its yaml beside it."""
        import yaml

        from sdstudio.models.saver import save_checkpoint

        architecture = copy.deepcopy(self.architecture)
        architecture["model"]["params"]["scale_factor"] = self.scale_factor
        metadata = {
            "modelspec.title": "sdstudio tiny",
            "sdstudio_training": "train-base",
            "sdstudio_seed": str(self.config.seed),
            **{f"sdstudio_{phase}_steps": str(n) for phase, n in self.steps_done.items()},
        }
        path = save_checkpoint(
            self.out / CHECKPOINT_NAME,
            unet=self.ema_unet,
            vae=self.vae,
            text_encoder=self.ema_text_encoder,
            family="sd1",
            metadata=metadata,
            yaml_text=yaml.safe_dump(architecture, sort_keys=False),
            dtype=torch.float16,
        )
        self.log(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
        return Path(path)


class _StepTimer:
    """Seconds per step, averaged since the phase (re)started."""

    def __init__(self):
        self.start = time.monotonic()
        self.count = 0

    def tick(self) -> float:
        self.count += 1
        return (time.monotonic() - self.start) / self.count


def _training_noise(shape: torch.Size, generator: torch.Generator, low_frequency: float) -> torch.Tensor:
    """Gaussian noise plus, at `low_frequency` strength each, noise on 1x1, 2x2 and 4x4 grids upsampled.

    The 1x1 level is offset noise (Guttenberg 2023); the coarser grids extend it to broad patterns
    such as a dark frame, which a 16x16 latent's noise holds often enough to steer an image.
    """
    noise = torch.randn(shape, generator=generator)
    if low_frequency:
        for cells in (1, 2, 4):
            coarse = torch.randn((*shape[:2], cells, cells), generator=generator)
            noise = noise + low_frequency * F.interpolate(
                coarse, size=tuple(shape[2:]), mode="bilinear", align_corners=False
            )
    return noise


def _warmup_cosine(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak`, then cosine decay to a tenth of it at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_base(
    config: BaseTrainingConfig, resume: bool = False, log: Callable[[str], None] = print
) -> BaseTrainingResult:
    """Run (or resume) the three training phases and export the checkpoint into `config.out_dir`."""
    config.check()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / LOG_FILE).open("a", encoding="utf-8")

    def log_line(message: str) -> None:
        log(message)
        log_file.write(message + "\n")
        log_file.flush()

    began = time.monotonic()
    try:
        run = _Run(config, log_line)
        if run.state_path.exists():
            if not resume:
                raise InvalidRequest(
                    "out",
                    f"{out} already holds a training state; pass --resume to continue it, or choose another --out",
                )
            run.load_state()
            reopened = run.extend_finished()
            if reopened:
                log_line(
                    f"extending the finished run: {reopened} from step {run.step} "
                    f"to {getattr(config, reopened + '_steps')}"
                )
            log_line(f"resuming at {run.phase} step {run.step}")
        else:
            settings = {k: v for k, v in asdict(config).items() if k != "architecture"}
            log_line(f"new run: {settings | {'out_dir': str(out)}}")
        if run.phase == "vae":
            run.train_vae()
        if run.phase == "unet":
            run.train_unet()
        if run.phase == "decoder":
            run.train_decoder()
        if run.phase == "refine":
            run.train_refine()
        grid = run.write_samples()
        checkpoint = run.export()
        return BaseTrainingResult(
            checkpoint, dict(run.steps_done), time.monotonic() - began, [*run.sample_grids[:-1], grid]
        )
    finally:
        log_file.close()
