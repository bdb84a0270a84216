"""A1111's Train API: create/embedding and train/embedding, run on the job queue (progress on /progress).

Unlike A1111, which answers 200 with the error in its text, a bad field is a 4xx naming it, checked
before the job is queued. Training reads `data_root` and writes `log_directory`: both must be folders
inside the data dir. The base is the current checkpoint (`sd_model_checkpoint`), loaded in float32 for
the run; the embedding is usable in prompts as soon as the route answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter

from sdstudio.errors import InvalidRequest
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, wait_for
from sdstudio.server.routes.models import reload_loaded_embeddings

if TYPE_CHECKING:
    from sdstudio.app import App
    from sdstudio.engine.job_queue import Job
    from sdstudio.training.textual_inversion import EmbeddingTrainingJob

router = APIRouter()


def _inside_data_dir(app: App, field: str, value: str) -> Path:
    try:
        return app.paths.resolve_inside(value)
    except ValueError:
        raise InvalidRequest(
            field, f"{value!r} is outside the data dir {app.paths.root}; use a folder inside it"
        ) from None


def _training_base(app: App):
    from sdstudio.training.lora_training import TrainingBase

    return TrainingBase.from_file(app.checkpoints.locate(None))


@router.post(
    "/create/embedding",
    response_model=m.CreateEmbeddingResponse,
    description="A1111's Create embedding: embeddings/NAME.pt with vectors from the init text's tokens on the "
    "current checkpoint. A name that is taken is a 422 naming `name` unless overwrite_old is set.",
)
async def create_embedding(body: m.CreateEmbeddingRequest, app: AppDep, queue: ClientQueueDep):
    from sdstudio.prompts.embeddings import MAX_VECTORS
    from sdstudio.training.textual_inversion import clean_embedding_name, create_embedding

    clean_embedding_name(body.name)
    if not 1 <= body.num_vectors_per_token <= MAX_VECTORS:
        raise InvalidRequest("num_vectors_per_token", f"must be from 1 to {MAX_VECTORS}")

    def run(job: Job) -> Path:
        job.report("Creating the embedding", 0, 1)
        path = create_embedding(
            _training_base(app).text_encoder,
            app.paths.folder("embedding"),
            body.name,
            body.num_vectors_per_token,
            body.init_text,
            body.overwrite_old,
        )
        reload_loaded_embeddings(app)
        return path

    path = await wait_for(queue.submit("create-embedding", run))
    return m.CreateEmbeddingResponse(info=f"create embedding filename: {path}", filename=str(path))


def embedding_job(app: App, body: m.TrainEmbeddingRequest) -> EmbeddingTrainingJob:
    """The training job an A1111 train/embedding body describes (paths resolved inside the data dir)."""
    from sdstudio.training.textual_inversion import EmbeddingTrainingJob

    if not body.data_root:
        raise InvalidRequest("data_root", "give the folder of training images")
    fields = body.model_dump()
    if body.preview_sampler_name is None and isinstance(body.preview_sampler_index, str):
        fields["preview_sampler_name"] = body.preview_sampler_index  # older clients name the sampler here
    return EmbeddingTrainingJob.from_fields(
        fields,
        _inside_data_dir(app, "data_root", body.data_root),
        _inside_data_dir(app, "log_directory", body.log_directory or "textual_inversion"),
    )


@router.post(
    "/train/embedding",
    response_model=m.TrainEmbeddingResponse,
    description="A1111's Train embedding. Runs on the job queue (loss and step on /progress, previews as its "
    "current image, interruptible: an interrupted run saves where it stopped, and the next one continues from "
    "there). A bad field is a 4xx naming it, before anything runs.",
)
async def train_embedding(body: m.TrainEmbeddingRequest, app: AppDep, queue: ClientQueueDep):
    from sdstudio.training.templates import templates_dir
    from sdstudio.training.textual_inversion import run_embedding_training

    job_spec = embedding_job(app, body)
    embeddings, templates = app.paths.folder("embedding"), templates_dir(app.paths.root)
    job_spec.check(embeddings, templates)

    def run(job: Job):
        job.report("Preparing the dataset", 0, job_spec.config.steps)

        def on_step(step: int, total: int, loss: float, text: str) -> None:
            job.report(f"Loss: {loss:.7f}, step {step}, last prompt: {text}", step, total)

        def on_preview(image) -> None:
            job.progress.preview = image
            job.progress.preview_id += 1

        result = run_embedding_training(
            _training_base(app),
            job_spec,
            embeddings,
            templates,
            on_step=on_step,
            on_preview=on_preview,
            interrupted=lambda: job.cancel.interrupted,
        )
        reload_loaded_embeddings(app)
        return result

    result = await wait_for(queue.submit("train-embedding", run))
    return m.TrainEmbeddingResponse(
        info=f"train embedding complete: filename: {result.path} error: None",
        filename=str(result.path),
        step=result.step,
        interrupted=result.interrupted,
    )
