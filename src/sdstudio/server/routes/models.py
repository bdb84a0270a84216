"""Checkpoints, VAEs, LoRAs and textual-inversion embeddings: listings, refresh, unload/reload."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fastapi import APIRouter

from sdstudio.app import App
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, wait_for

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

router = APIRouter()


def loaded_text_width(app: App) -> int | None:
    """Width of the loaded model's text embeddings (768 SD1, 1024 SD2, 2048 SDXL), if one is loaded."""
    model = app.checkpoints.current_model
    if model is None:
        return None
    return sum(_token_embedding_width(e) for e in model.encoder.text_encoders) or None


def _token_embedding_width(encoder: torch.nn.Module) -> int:
    # The engine types text encoders as torch Modules; they are transformers models, and torch
    # types a submodule's attributes as Tensor | Module.
    embeddings = cast("PreTrainedModel", encoder).get_input_embeddings()
    return int(cast("torch.Tensor", embeddings.weight).shape[1])


# The lists keep A1111's item shape, so a client picking from them gets usable files only (as /upscalers);
# a file that cannot be used is shown with its reason by `sdstudio models list`, and naming it is a 4xx.


@router.get("/sd-models", response_model=list[m.SDModelItem])
def get_sd_models(app: AppDep):
    return [
        m.SDModelItem(
            title=e.title,
            model_name=e.model_name,
            hash=e.shorthash,
            sha256=e.sha256,
            filename=str(e.path),
            config=str(e.config) if e.config else None,
        )
        for e in app.models.list("checkpoint", include_unusable=False)
    ]


@router.get("/sd-vae", response_model=list[m.SDVaeItem])
def get_sd_vae(app: AppDep):
    vaes = app.models.list("vae", with_hashes=False, include_unusable=False)
    return [m.SDVaeItem(model_name=e.name, filename=str(e.path)) for e in vaes]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(app: AppDep):
    app.models.list("checkpoint")
    return None


@router.post("/refresh-vae")
def refresh_vae(app: AppDep):
    app.models.list("vae", with_hashes=False)
    return None


@router.post("/unload-checkpoint")
async def unload_checkpoint(app: AppDep, queue: ClientQueueDep):
    job = queue.submit("unload-checkpoint", lambda job: app.checkpoints.unload())
    await wait_for(job)
    return {}  # A1111's answer


@router.post("/reload-checkpoint")
async def reload_checkpoint(app: AppDep, queue: ClientQueueDep):
    job = queue.submit("reload-checkpoint", lambda job: app.checkpoints(None) and None)
    await wait_for(job)
    return {}  # A1111's answer


@router.get("/loras")
def get_loras(app: AppDep):
    from sdstudio.extensions.lora.library import list_loras

    return list_loras(app.loras)


@router.post("/refresh-loras")
def refresh_loras():
    return None


@router.get("/embeddings", response_model=m.EmbeddingsResponse)
def get_embeddings(app: AppDep):
    from sdstudio.prompts.embeddings import EmbeddingDatabase

    database = EmbeddingDatabase(app.paths.folder("embedding"), expected_width=loaded_text_width(app))
    return database.api_listing()


@router.post("/refresh-embeddings")
async def refresh_embeddings(app: AppDep, queue: ClientQueueDep):
    """Rescan the embeddings folder so files added since the model loaded can be used in prompts."""
    # In line with the queue: a generation running now keeps the embeddings it started with.
    await wait_for(queue.submit("refresh-embeddings", lambda job: reload_loaded_embeddings(app)))
    return None


def reload_loaded_embeddings(app: App) -> None:
    """Rescan the embeddings the loaded model's prompt encoder uses (a model loaded later reads the folder)."""
    from sdstudio.prompts.conditioning import PromptConditioner

    model = app.checkpoints.current_model
    if model is not None and isinstance(model.encoder, PromptConditioner):
        database = model.encoder.prompt_encoder.embeddings
        if database is not None:
            database.reload()
