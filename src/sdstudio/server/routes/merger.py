"""The Checkpoint Merger: merge two or three checkpoints into a new one in models/Stable-diffusion."""

from __future__ import annotations

from fastapi import APIRouter

from sdstudio.engine.job_queue import submit_merge
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, wait_for

router = APIRouter()


@router.post(
    "/merge-checkpoints",
    response_model=m.MergeCheckpointsResponse,
    description="A1111's Checkpoint Merger (run_modelmerger's parameters). Runs on the job queue (its progress "
    "on /progress, interruptible); the new checkpoint is listed at once. An existing file is never overwritten: "
    "a name that is taken is a 422 naming custom_name. A model name that matches nothing is a 404 naming the field.",
)
async def merge_checkpoints(body: m.MergeCheckpointsRequest, app: AppDep, queue: ClientQueueDep):
    from sdstudio.models.merge import MergeRequest

    request = MergeRequest(**body.model_dump())  # a bad value is a 422 naming its field
    result = await wait_for(submit_merge(queue, app.merger, request))
    entry = result.entry
    return m.MergeCheckpointsResponse(
        info=result.message,
        title=entry.title,
        model_name=entry.model_name,
        filename=str(result.path),
        sha256=entry.sha256,
        config=str(result.config) if result.config else None,
        is_inpainting=result.is_inpainting,
        is_instruct_pix2pix=result.is_instruct_pix2pix,
    )
