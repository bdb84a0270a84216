"""Generation and its controls: txt2img, img2img, progress, interrupt, skip."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from sdstudio.engine.job_queue import JobQueue, submit_generation
from sdstudio.engine.request import Img2ImgRequest, Txt2ImgRequest
from sdstudio.errors import InvalidRequest
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, QueueDep, wait_for
from sdstudio.server.images import encode_image_base64

router = APIRouter()


def engine_request_fields(body: BaseModel, request_type: type[BaseModel]) -> dict[str, Any]:
    """The A1111 body's fields that the engine request knows, None meaning 'default'.

    A1111 semantics kept: `sampler_index` is the fallback for `sampler_name` (default
    "Euler"); `save_images` decides whether samples and grid are written to disk.
    """
    values = body.model_dump()
    fields = {k: v for k, v in values.items() if k in request_type.model_fields and v is not None}
    fields["sampler_name"] = values.get("sampler_name") or values.get("sampler_index") or "Euler"
    save = bool(values.get("save_images"))
    fields["do_not_save_samples"] = not save or bool(values.get("do_not_save_samples"))
    fields["do_not_save_grid"] = not save or bool(values.get("do_not_save_grid"))
    if isinstance(fields.get("prompt"), list) or isinstance(fields.get("negative_prompt"), list):
        raise InvalidRequest("prompt", "lists of prompts are not supported; send one prompt string")
    return fields


def generation_response(
    result, body: m.StableDiffusionTxt2ImgProcessingAPI | m.StableDiffusionImg2ImgProcessingAPI
) -> dict[str, Any]:
    """A1111's txt2img/img2img answer: base64 images, the request echoed, info as JSON text."""
    images: list[str] = []
    if body.send_images:
        for index, image in enumerate(result.images):
            infotext = None
            offset = index - result.index_of_first_image
            if 0 <= offset < len(result.infotexts):
                infotext = result.infotexts[offset]
            images.append(encode_image_base64(image, infotext))
    parameters = body.model_dump(exclude={"init_images", "mask"} if hasattr(body, "init_images") else set())
    if hasattr(body, "init_images"):
        parameters["init_images"] = None
        parameters["mask"] = None
    return {"images": images, "parameters": parameters, "info": json.dumps(result.js())}


def progress_response(queue: JobQueue, skip_current_image: bool = False) -> m.ProgressResponse:
    """A1111's progress answer for whatever runs now."""
    job = queue.current
    state = {
        "skipped": False,
        "interrupted": False,
        "stopping_generation": False,
        "job": "",
        "job_count": 0,
        "job_timestamp": "0",
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
        "queue_size": queue.pending_count(),
    }
    if job is None:
        return m.ProgressResponse(progress=0, eta_relative=0, state=state, current_image=None, textinfo=None)
    p = job.progress
    started = job.started_at or time.time()
    state.update(
        skipped=job.cancel.skipped,
        interrupted=job.cancel.interrupted,
        stopping_generation=job.cancel.interrupted,
        job=job.id,
        job_count=p.job_count,
        job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(started)),
        job_no=p.job_no,
        sampling_step=p.sampling_step,
        sampling_steps=p.sampling_steps,
    )
    progress = job.fraction_done()
    elapsed = time.time() - started
    eta = (elapsed / progress - elapsed) if progress > 0.01 else 0.0
    image = None
    if p.preview is not None and not skip_current_image:
        image = encode_image_base64(p.preview)
    return m.ProgressResponse(
        progress=progress, eta_relative=eta, state=state, current_image=image, textinfo=p.textinfo
    )


@router.post("/txt2img", response_model=m.TextToImageResponse)
async def txt2img(body: m.StableDiffusionTxt2ImgProcessingAPI, app: AppDep, queue: QueueDep):
    request = Txt2ImgRequest(**engine_request_fields(body, Txt2ImgRequest))
    job = submit_generation(
        queue, "txt2img", lambda control: app.engine.txt2img(request, control), job_id=body.force_task_id
    )
    return generation_response(await wait_for(job), body)


@router.post("/img2img", response_model=m.ImageToImageResponse)
async def img2img(body: m.StableDiffusionImg2ImgProcessingAPI, app: AppDep, queue: QueueDep):
    if not body.init_images:
        raise InvalidRequest("init_images", "img2img needs at least one init image")
    request = Img2ImgRequest(**engine_request_fields(body, Img2ImgRequest))
    job = submit_generation(
        queue, "img2img", lambda control: app.engine.img2img(request, control), job_id=body.force_task_id
    )
    return generation_response(await wait_for(job), body)


@router.get("/progress", response_model=m.ProgressResponse)
def get_progress(queue: QueueDep, skip_current_image: bool = False):
    return progress_response(queue, skip_current_image)


@router.post("/interrupt")
def interrupt(queue: QueueDep):
    queue.interrupt()
    return {}


@router.post("/skip")
def skip(queue: QueueDep):
    queue.skip()
    return None  # A1111 answers skip with null, interrupt with {}
