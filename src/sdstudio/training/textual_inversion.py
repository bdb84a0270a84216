"""Textual inversion: create an embedding and train its vectors on a folder of images, as A1111 does.

Following A1111's `modules/textual_inversion` (and diffusers' textual_inversion example):

1. `create_embedding` writes `embeddings/NAME.pt` in A1111's layout (`string_to_token`,
   `string_to_param {"*": [vectors, width]}`, `name`, `step`, `sd_checkpoint`, `sd_checkpoint_name`),
   each vector initialised from the token embeddings of the init text (vector i takes the init
   token at i * tokens // vectors, A1111's rule; no init text: zeros).
2. `TextualInversionTrainer` trains only those vectors: the prompt's embedding name is replaced by
   new token ids past the vocabulary, whose embeddings are the trained vectors (the token-embedding
   layer is wrapped for the run and put back after); the UNet and text encoder stay frozen. Each
   step: template prompts and latents from the shared `TemplateDataset`, the epsilon-prediction loss
   (with alpha weights when asked), `gradient_step` batches per optimizer step, AdamW (weight decay
   0, as A1111) at the rate of A1111's learning-rate schedule, optional gradient clipping by value
   or norm (its own schedule).
3. Every `save_embedding_every` steps: `LOG/embeddings/NAME-STEP.pt` (and a kohya `.safetensors`
   with `emb_params` when asked) and the embedding itself with its optimizer state beside it
   (`NAME.pt.optim`, A1111's name and `hash`, plus the data position and random state so a resumed
   run continues exactly); every `create_image_every` steps a preview in `LOG/images/` and, with
   `save_image_with_stored_embedding`, one in `LOG/image_embeddings/` carrying the embedding in its
   `sd-ti-embedding` chunk. Training continues from the embedding's `step`, as in A1111.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, PngImagePlugin

from sdstudio.config import atomic_path
from sdstudio.engine.samplers import resolve_sampler_and_schedule
from sdstudio.errors import InvalidRequest
from sdstudio.models.hashes import sha256_of_file
from sdstudio.prompts.embeddings import MAX_VECTORS, PNG_CHUNK, embedding_to_b64, load_embedding_file
from sdstudio.training.learn_schedule import LearnRateSchedule
from sdstudio.training.lora_training import EpochOrder, TrainingBase, noise_prediction_loss, sample_images
from sdstudio.training.templates import DatasetOptions, TemplateDataset, read_template

PLACEHOLDER_TOKEN_ID = 265  # "*" in CLIP's vocabulary: A1111 writes string_to_token {"*": 265}
OPTIMIZER_SUFFIX = ".optim"  # A1111 keeps the optimizer state in NAME.pt.optim
CLIP_GRAD_MODES = ("disabled", "value", "norm")
LOSS_LOG = "textual_inversion_loss.csv"


def clean_embedding_name(name: str, field: str = "name") -> str:
    """The name with only letters, digits and `._- ` kept (A1111's rule); refused when nothing is left."""
    cleaned = "".join(c for c in str(name) if c.isalnum() or c in "._- ").strip()
    if not cleaned or cleaned in (".", ".."):
        raise InvalidRequest(field, "give the embedding a name (letters, digits, '.', '_', '-' or spaces)")
    return cleaned


def _embeddings_module(text_encoder: torch.nn.Module) -> Any:
    """CLIP's `embeddings` module (token and position embeddings), under `text_model` in CLIPTextModel."""
    return getattr(text_encoder, "text_model", text_encoder).embeddings


def token_embedding_layer(text_encoder: torch.nn.Module) -> torch.nn.Embedding:
    """The text encoder's token-embedding table (CLIPTextModel keeps it under text_model.embeddings)."""
    layer = _embeddings_module(text_encoder).token_embedding
    if not isinstance(layer, torch.nn.Embedding):
        raise InvalidRequest("embedding_name", "this text encoder's token embeddings are wrapped by another trainer")
    return layer


@torch.no_grad()
def init_vectors(text_encoder: torch.nn.Module, init_text: str, count: int) -> torch.Tensor:
    """[count, width] vectors from the token embeddings of `init_text` (A1111's spread; zeros without text)."""
    from sdstudio.prompts.tokenizer import tokenize

    table = token_embedding_layer(text_encoder).weight
    ids = tokenize(init_text or "")
    vectors = torch.zeros((count, table.shape[1]), dtype=torch.float32)
    if ids:
        embedded = table[torch.tensor(ids, device=table.device)].float().cpu()
        for i in range(count):
            vectors[i] = embedded[i * len(ids) // count]
    return vectors


def embedding_data(
    vectors: torch.Tensor, name: str, step: int | None, sd_checkpoint: str | None, sd_checkpoint_name: str | None
) -> dict[str, Any]:
    """An embedding as A1111 saves it."""
    return {
        "string_to_token": {"*": PLACEHOLDER_TOKEN_ID},
        "string_to_param": {"*": vectors.detach().float().cpu().clone()},
        "name": name,
        "step": step,
        "sd_checkpoint": sd_checkpoint,
        "sd_checkpoint_name": sd_checkpoint_name,
    }


def save_embedding_file(path: Path, data: dict[str, Any]) -> Path:
    """Write an A1111 `.pt` (or, for a `.safetensors` path, kohya's `emb_params`) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = data["string_to_param"]["*"]
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            metadata = {k: str(data[k]) for k in ("name", "step", "sd_checkpoint", "sd_checkpoint_name") if data[k]}
            save_file({"emb_params": vectors.contiguous()}, str(tmp), metadata=metadata)
        else:
            torch.save(data, tmp)
    return path


def embedding_checksum(vectors: torch.Tensor) -> str:
    """A1111's 4-hex-digit checksum of the vectors (the `hash` that ties an `.optim` file to its embedding)."""
    value = 0
    for number in (vectors.detach().float().cpu().reshape(-1) * 100).tolist():
        value = ((value * 281) ^ (int(number) * 997)) & 0xFFFFFFFF
    return f"{value & 0xFFFF:04x}"


def create_embedding(
    text_encoder: torch.nn.Module,
    folder: Path,
    name: str,
    num_vectors_per_token: int = 1,
    init_text: str = "*",
    overwrite_old: bool = False,
) -> Path:
    """Write `folder/NAME.pt`: a new embedding of `num_vectors_per_token` vectors initialised from `init_text`."""
    name = clean_embedding_name(name)
    if not 1 <= int(num_vectors_per_token) <= MAX_VECTORS:
        raise InvalidRequest("num_vectors_per_token", f"must be from 1 to {MAX_VECTORS}")
    path = Path(folder) / f"{name}.pt"
    if path.exists() and not overwrite_old:
        raise InvalidRequest("name", f"{path} already exists; choose another name or set overwrite_old")
    vectors = init_vectors(text_encoder, init_text, int(num_vectors_per_token))
    save_embedding_file(path, embedding_data(vectors, name, 0, None, None))
    optimizer_file = path.with_name(path.name + OPTIMIZER_SUFFIX)
    optimizer_file.unlink(missing_ok=True)  # an overwritten embedding starts afresh
    return path


class _TokenEmbeddingWithNewVectors(torch.nn.Module):
    """The token-embedding table extended by trained vectors: ids from `len(table)` on look up `vectors`."""

    def __init__(self, table: torch.nn.Embedding, vectors: torch.Tensor):
        super().__init__()
        self.table, self.vectors = table, vectors
        self.weight = table.weight  # what code reading the table's width finds

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        size = self.table.num_embeddings
        base = self.table(ids.clamp(max=size - 1))
        new = self.vectors[(ids - size).clamp(0, self.vectors.shape[0] - 1)].to(base.dtype)
        return torch.where((ids >= size).unsqueeze(-1), new, base)


@contextmanager
def new_token_vectors(text_encoder: torch.nn.Module, vectors: torch.Tensor) -> Iterator[int]:
    """Put `vectors` into the text encoder as token ids from the vocabulary's size on; yields the first id."""
    holder = _embeddings_module(text_encoder)
    table = token_embedding_layer(text_encoder)
    holder.token_embedding = _TokenEmbeddingWithNewVectors(table, vectors)
    try:
        yield table.num_embeddings
    finally:
        holder.token_embedding = table


def placeholder_token_ids(texts: list[str], name: str, first_id: int, count: int) -> torch.Tensor:
    """[B, 77] CLIP ids with each whole-word `name` in the texts replaced by the `count` new ids."""
    from sdstudio.prompts.tokenizer import BOS_ID, EOS_ID, tokenize

    pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
    rows = []
    for text in texts:
        ids: list[int] = []
        for index, part in enumerate(pattern.split(text)):
            if index:
                ids += range(first_id, first_id + count)
            ids += tokenize(part)
        row = [BOS_ID, *ids[:75], EOS_ID]
        rows.append(row + [EOS_ID] * (77 - len(row)))
    return torch.tensor(rows, dtype=torch.long)


@dataclass
class TextualInversionConfig:
    """A1111's train/embedding fields (besides the dataset's), with A1111's defaults."""

    embedding_name: str
    learn_rate: str = "0.005"
    batch_size: int = 1
    gradient_step: int = 1
    steps: int = 100000
    clip_grad_mode: str = "disabled"
    clip_grad_value: str = "0.1"
    create_image_every: int = 500
    save_embedding_every: int = 500
    save_image_with_stored_embedding: bool = True
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_sampler_name: str = "Euler"
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 512
    preview_height: int = 512
    save_safetensors: bool = False  # also write kohya `.safetensors` (emb_params) copies
    seed: int = 0  # data order and noise (A1111 draws them unseeded)

    def check(self) -> None:
        """Reject impossible values, naming the field."""
        for name in ("batch_size", "gradient_step", "steps"):
            if int(getattr(self, name)) < 1:
                raise InvalidRequest(name, "must be at least 1")
        for name in ("create_image_every", "save_embedding_every"):
            if int(getattr(self, name)) < 0:
                raise InvalidRequest(name, "must be 0 (never) or more")
        if self.clip_grad_mode not in CLIP_GRAD_MODES:
            raise InvalidRequest(
                "clip_grad_mode", f"{self.clip_grad_mode!r} is not one of {', '.join(CLIP_GRAD_MODES)}"
            )
        for name in ("preview_steps", "preview_width", "preview_height"):
            if int(getattr(self, name)) < 1:
                raise InvalidRequest(name, "must be at least 1")


@dataclass
class TextualInversionResult:
    """What a training run did and wrote."""

    path: Path
    step: int
    losses: list[float]
    seconds: float
    saved: list[Path] = field(default_factory=list)
    previews: list[Path] = field(default_factory=list)
    resumed_from: int = 0
    interrupted: bool = False


@dataclass
class _RunState:
    """Where the run stands (saved in the .optim file beside the embedding)."""

    step: int
    losses: list[float]
    order: EpochOrder
    generator: torch.Generator

    def to_saved(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "losses": list(self.losses),
            "epoch": self.order.epoch,
            "position": self.order.position,
            "generator_state": self.generator.get_state(),
            "order_seed": self.order.seed,
        }


class TextualInversionTrainer:
    """One training run of the embedding at `embedding_path` over `base` on `dataset`."""

    def __init__(
        self,
        base: TrainingBase,
        embedding_path: Path,
        dataset: TemplateDataset,
        config: TextualInversionConfig,
        log_dir: Path,
        on_step: Callable[[int, int, float, str], None] | None = None,
        on_preview: Callable[[Image.Image], None] | None = None,
        interrupted: Callable[[], bool] = lambda: False,
    ):
        from diffusers import DDPMScheduler

        config.check()
        self.began = time.monotonic()
        self.base, self.path, self.dataset, self.config, self.log_dir = (
            base,
            Path(embedding_path),
            dataset,
            config,
            log_dir,
        )
        self.on_step, self.on_preview, self.interrupted = on_step, on_preview, interrupted
        if not self.path.is_file():
            raise InvalidRequest(
                "embedding_name", f"no embedding {self.path.name} in {self.path.parent}; create it first"
            )
        embedding = load_embedding_file(self.path)
        self.name = self.path.stem
        width = token_embedding_layer(base.text_encoder).weight.shape[1]
        if embedding.width != width or len(embedding.tensors) != 1:
            raise InvalidRequest(
                "embedding_name",
                f"{self.path.name} is {embedding.architecture} (width {embedding.width}); "
                f"the model needs width {width}",
            )
        device = next(base.text_encoder.parameters()).device
        self.vectors = torch.nn.Parameter(embedding.vectors_for(None).clone().to(device))
        self.initial_step = int(embedding.step or 0)
        self.schedule = LearnRateSchedule.parse(config.learn_rate, config.steps, self.initial_step)
        self.clip_schedule = (
            LearnRateSchedule.parse(config.clip_grad_value, config.steps, self.initial_step, field="clip_grad_value")
            if config.clip_grad_mode != "disabled"
            else None
        )
        # A1111: AdamW over the vectors alone, no weight decay.
        self.optimizer = torch.optim.AdamW(
            [self.vectors], lr=self.schedule.rate_at(self.initial_step) or 0.0, weight_decay=0.0
        )
        seed = config.seed + self.initial_step
        self.state = _RunState(
            self.initial_step, [], EpochOrder(dataset.example_indices(), seed), torch.Generator().manual_seed(seed)
        )
        self.resumed_exactly = self._load_optimizer_state()
        self.alphas_cumprod = DDPMScheduler.from_config(base.scheduler_config).alphas_cumprod
        self.saved: list[Path] = []
        self.previews: list[Path] = []
        self._checkpoint_hash: str | None = None

    # -- files ---------------------------------------------------------------------------

    @property
    def optimizer_path(self) -> Path:
        return self.path.with_name(self.path.name + OPTIMIZER_SUFFIX)

    def _load_optimizer_state(self) -> bool:
        """The optimizer (and, when sdstudio wrote it, the data position and random state) of the last save."""
        if not self.optimizer_path.is_file():
            return False
        saved = torch.load(self.optimizer_path, map_location="cpu", weights_only=True)
        if saved.get("hash") != embedding_checksum(self.vectors):
            return False  # the embedding changed since (A1111 then starts the optimizer afresh too)
        self.optimizer.load_state_dict(saved["optimizer_state_dict"])
        resume = saved.get("sdstudio_resume")
        if not resume or int(resume["step"]) != self.initial_step:
            return False
        state = self.state
        state.losses = list(resume["losses"])
        order_seed = int(resume["order_seed"])
        state.order = EpochOrder(state.order.repeated, order_seed, int(resume["epoch"]), int(resume["position"]))
        state.generator.set_state(resume["generator_state"])
        return True

    def _checkpoint_info(self) -> tuple[str | None, str | None]:
        """A1111's sd_checkpoint (short hash) and sd_checkpoint_name of the base model."""
        path = self.base.path
        if self._checkpoint_hash is None:
            self._checkpoint_hash = sha256_of_file(path)[:10] if path is not None and path.is_file() else ""
        return self._checkpoint_hash or None, self.base.name or (path.stem if path else None)

    def data(self, name: str | None = None) -> dict[str, Any]:
        """The embedding as it stands, in A1111's layout."""
        checkpoint, checkpoint_name = self._checkpoint_info()
        return embedding_data(self.vectors, name or self.name, self.state.step, checkpoint, checkpoint_name)

    def save(self) -> None:
        """The embedding file and its optimizer state (what a later run continues from)."""
        save_embedding_file(self.path, self.data())
        saved = {
            "hash": embedding_checksum(self.vectors),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "sdstudio_resume": self.state.to_saved(),
        }
        with atomic_path(self.optimizer_path) as tmp:
            torch.save(saved, tmp)

    def _save_numbered(self) -> None:
        step = self.state.step
        data = self.data(f"{self.name}-{step}")
        folder = self.log_dir / "embeddings"
        self.saved.append(save_embedding_file(folder / f"{self.name}-{step}.pt", data))
        if self.config.save_safetensors:
            self.saved.append(save_embedding_file(folder / f"{self.name}-{step}.safetensors", data))

    def _preview(self, last_text: str) -> None:
        """A preview image in LOG/images (and one carrying the embedding in LOG/image_embeddings)."""
        config, step = self.config, self.state.step
        if config.preview_from_txt2img:
            prompt, negative, steps = config.preview_prompt, config.preview_negative_prompt, config.preview_steps
            sampler, cfg, width, height = (
                config.preview_sampler_name,
                config.preview_cfg_scale,
                config.preview_width,
                config.preview_height,
            )
            seed = config.preview_seed
        else:
            prompt, negative, steps, sampler, cfg = last_text, "", 20, "Euler", 7.0
            first = self.dataset.entries[0].mean.shape
            width, height, seed = first[2] * self._latent_factor(), first[1] * self._latent_factor(), -1
        if seed == -1:
            seed = int(torch.randint(2**31 - 1, (1,)))  # A1111's random seed (the run's own generator is not drawn)
        with new_token_vectors(self.base.text_encoder, self.vectors.detach()) as first_id:
            image = sample_images(
                self.base,
                [prompt],
                width,
                seed,
                steps,
                cfg,
                sampler,
                negative_prompt=negative,
                height=height,
                token_ids=lambda texts: placeholder_token_ids(texts, self.name, first_id, self.vectors.shape[0]),
            )[0]
        parameters = (
            f"{prompt}\nNegative prompt: {negative}\n"
            f"Steps: {steps}, Sampler: {sampler}, CFG scale: {cfg}, Seed: {seed}, Size: {width}x{height}"
        )
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
        path = self.log_dir / "images" / f"{self.name}-{step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", pnginfo=info)
        self.previews.append(path)
        if config.save_image_with_stored_embedding:
            info.add_text(PNG_CHUNK, embedding_to_b64(self.data(f"{self.name}-{step}")))
            stored = self.log_dir / "image_embeddings" / f"{self.name}-{step}.png"
            stored.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(stored) as tmp:
                image.save(tmp, format="PNG", pnginfo=info)
            self.previews.append(stored)
        if self.on_preview is not None:
            self.on_preview(image)

    def _latent_factor(self) -> int:
        return int(2 ** (len(self.base.vae.config.block_out_channels) - 1))

    def _log_loss(self, loss: float, rate: float) -> None:
        path = self.log_dir / LOSS_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        epoch_length = max(1, len(self.dataset))
        with path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "epoch", "epoch_step", "loss", "learn_rate"])
            step = self.state.step
            writer.writerow([step, (step - 1) // epoch_length, (step - 1) % epoch_length + 1, f"{loss:.7f}", rate])

    # -- training ------------------------------------------------------------------------

    def step(self, rate: float) -> tuple[float, str]:
        """One optimizer step over `gradient_step` batches at `rate`; returns its loss and the last prompt."""
        config, state, base = self.config, self.state, self.base
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.optimizer.zero_grad(set_to_none=True)
        total, text = 0.0, ""
        device = next(base.text_encoder.parameters()).device
        with new_token_vectors(base.text_encoder, self.vectors) as first_id:
            for _ in range(config.gradient_step):
                batch = self.dataset.batch(state.order.take(config.batch_size), state.generator)
                ids = placeholder_token_ids(batch.texts, self.name, first_id, self.vectors.shape[0])
                context = base.text_encoder(ids.to(device))[0]
                loss = noise_prediction_loss(
                    base.unet, self.alphas_cumprod, batch.latents, context, state.generator, batch.weights
                )
                loss = loss / config.gradient_step
                loss.backward()
                total += float(loss.detach())
                text = batch.texts[0]
        if self.clip_schedule is not None:
            limit = self.clip_schedule.rate_at(state.step)
            if limit is not None:
                if config.clip_grad_mode == "value":
                    torch.nn.utils.clip_grad_value_([self.vectors], limit)
                else:
                    torch.nn.utils.clip_grad_norm_([self.vectors], limit)
        self.optimizer.step()
        state.step += 1
        state.losses.append(total)
        return total, text

    def train(self) -> TextualInversionResult:
        """Step until the schedule ends (or an interrupt), saving and previewing on the way; saves at the end."""
        config, state = self.config, self.state
        base = self.base
        base.unet.eval().requires_grad_(False)
        base.text_encoder.eval().requires_grad_(False)
        base.vae.eval().requires_grad_(False)
        interrupted = False
        end = self.schedule.end_step
        while state.step < end:
            rate = self.schedule.rate_at(state.step)
            if rate is None:
                break
            if self.interrupted():
                interrupted = True
                break
            loss, text = self.step(rate)
            self._log_loss(loss, rate)
            if self.on_step is not None:
                self.on_step(state.step, end, loss, text)
            if config.save_embedding_every and state.step % config.save_embedding_every == 0:
                self._save_numbered()
                self.save()
            if config.create_image_every and state.step % config.create_image_every == 0:
                self._preview(text)
        self.save()
        if config.save_safetensors:
            self.saved.append(save_embedding_file(self.log_dir / f"{self.name}.safetensors", self.data()))
        return TextualInversionResult(
            self.path,
            state.step,
            state.losses,
            time.monotonic() - self.began,
            self.saved,
            self.previews,
            self.initial_step,
            interrupted,
        )


@dataclass
class EmbeddingTrainingJob:
    """Everything a train-embedding request names: the run's settings, the dataset, the template and the log root."""

    config: TextualInversionConfig
    options: DatasetOptions
    data_root: Path
    template_filename: str
    log_directory: Path

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], data_root: Path, log_directory: Path) -> EmbeddingTrainingJob:
        """The job A1111's train_embedding fields describe (CLI flags and API bodies both come as these)."""
        name = str(fields.get("embedding_name") or "")
        if not name:
            raise InvalidRequest("embedding_name", "choose the embedding to train")
        known = {f.name for f in dataclasses.fields(TextualInversionConfig)}
        values = {key: value for key, value in fields.items() if key in known and value is not None}
        for key in ("learn_rate", "clip_grad_value"):  # A1111 sends them as text (schedules); numbers read the same
            if key in values:
                values[key] = str(values[key])
        options = {f.name for f in dataclasses.fields(DatasetOptions)} - {"placeholder"}
        return cls(
            TextualInversionConfig(**values),
            DatasetOptions(placeholder=name, **{key: fields[key] for key in options if fields.get(key) is not None}),
            data_root,
            str(fields.get("template_filename") or "style_filewords.txt"),
            log_directory,
        )

    def embedding_path(self, embeddings_folder: Path) -> Path:
        """Where the embedding being trained lives."""
        return Path(embeddings_folder) / f"{self.config.embedding_name}.pt"

    def check(self, embeddings_folder: Path, templates_folder: Path) -> list[str]:
        """Refuse what would fail before any model loads, naming the field; returns the template's lines."""
        self.config.check()
        self.options.check()
        LearnRateSchedule.parse(self.config.learn_rate, self.config.steps)
        if self.config.clip_grad_mode != "disabled":
            LearnRateSchedule.parse(self.config.clip_grad_value, self.config.steps, field="clip_grad_value")
        if not self.embedding_path(embeddings_folder).is_file():
            raise InvalidRequest(
                "embedding_name", f"no embedding {self.config.embedding_name!r} in {embeddings_folder}; create it first"
            )
        if (
            self.config.create_image_every
            and resolve_sampler_and_schedule(self.config.preview_sampler_name, None) is None
        ):
            raise InvalidRequest("preview_sampler_name", f"unknown sampler {self.config.preview_sampler_name!r}")
        if not self.data_root.is_dir():
            raise InvalidRequest("data_root", f"{self.data_root} is not a folder of training images")
        return read_template(templates_folder, self.template_filename)

    def log_dir(self) -> Path:
        """A1111's log folder for the run: LOG_DIRECTORY/YYYY-MM-DD/NAME."""
        return self.log_directory / time.strftime("%Y-%m-%d") / self.config.embedding_name


def run_embedding_training(
    base: TrainingBase,
    job: EmbeddingTrainingJob,
    embeddings_folder: Path,
    templates_folder: Path,
    on_step: Callable[[int, int, float, str], None] | None = None,
    on_preview: Callable[[Image.Image], None] | None = None,
    interrupted: Callable[[], bool] = lambda: False,
) -> TextualInversionResult:
    """Check the job, encode the dataset and train the embedding (continuing from its saved step)."""
    lines = job.check(embeddings_folder, templates_folder)
    dataset = TemplateDataset(job.data_root, lines, job.options, base.vae, base.vae_scaling_factor)
    trainer = TextualInversionTrainer(
        base,
        job.embedding_path(embeddings_folder),
        dataset,
        job.config,
        job.log_dir(),
        on_step,
        on_preview,
        interrupted,
    )
    return trainer.train()
