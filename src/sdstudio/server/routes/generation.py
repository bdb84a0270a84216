"""Generation and its controls: txt2img, img2img, progress, interrupt, skip."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel

from sdstudio.app import App
from sdstudio.config import check_model_name_option
from sdstudio.engine.infotext import parse_generation_parameters, request_fields_from_parameters
from sdstudio.engine.job_queue import JobQueue
from sdstudio.engine.request import (
    GenerationResult,
    Img2ImgRequest,
    Txt2ImgRequest,
    check_limits,
    decode_img2img_images,
    hires_checkpoint_name,
    refiner_checkpoint_name,
)
from sdstudio.engine.scripting import ScriptSelection
from sdstudio.engine.seeds import fixed_seed
from sdstudio.errors import InvalidRequest
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, QueueDep, TasksDep, wait_for
from sdstudio.server.images import encode_image_base64
from sdstudio.server.tasks import OutputImage, PreparedTask, TaskOutput

router = APIRouter()

ROUTE_FIELDS = frozenset(
    {
        "sampler_index",  # sampler_name's fallback
        "save_images",  # decides do_not_save_samples/do_not_save_grid
        "send_images",
        "force_task_id",
        "seed_enable_extras",
        "infotext",
        "script_name",
        "script_args",  # the arguments of script_name, refused with it
        "alwayson_scripts",
        "include_init_images",
    }
)
"""A1111 body fields this module acts on itself; the others reach the engine request or are m.IGNORED_FIELDS."""


GenerationBody = TypeVar("GenerationBody", m.StableDiffusionTxt2ImgProcessingAPI, m.StableDiffusionImg2ImgProcessingAPI)


def engine_request_fields(body: BaseModel, request_type: type[BaseModel]) -> dict[str, Any]:
    """The A1111 body's fields that the engine request knows, None meaning 'default'.

    A1111 semantics kept: `sampler_index` is the fallback for `sampler_name` (default
    "Euler"); `save_images` decides whether samples and grid are written to disk;
    `seed_enable_extras: false` turns variation seed and resize-seed-from off.
    """
    values = body.model_dump()
    fields = {k: v for k, v in values.items() if k in request_type.model_fields and v is not None}
    fields["sampler_name"] = values.get("sampler_name") or values.get("sampler_index") or "Euler"
    save = bool(values.get("save_images"))
    fields["do_not_save_samples"] = not save or bool(values.get("do_not_save_samples"))
    fields["do_not_save_grid"] = not save or bool(values.get("do_not_save_grid"))
    if values.get("seed_enable_extras") is False:
        fields.update(subseed=-1, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0)
    return fields


def drawn_seeds(fields: dict[str, Any]) -> dict[str, int]:
    """The job's seed and variation seed, a -1 drawn now: its task stores them, so a re-run makes the same images."""
    return {"seed": fixed_seed(fields.get("seed")), "subseed": fixed_seed(fields.get("subseed"))}


def apply_infotext(body: GenerationBody, kind: str, app: App) -> GenerationBody:
    """A1111's `apply_infotext`: a pasted infotext fills the fields the body leaves unset.

    Fields sent in the body win; the infotext's settings (Clip skip, ENSD) join
    `override_settings` where the body does not override the same setting. Extensions'
    `infotext_pasted` callbacks see (and may change) the parsed parameters first, and
    always-on scripts the body does not mention get their arguments from their
    `infotext_fields`.
    """
    if not body.infotext:
        return body
    params = parse_generation_parameters(body.infotext)
    app.scripts.callbacks.call("infotext_pasted", body.infotext, params)
    pasted = request_fields_from_parameters(params, kind)
    settings = pasted.pop("override_settings", {})
    update = {name: value for name, value in pasted.items() if name not in body.model_fields_set}
    if settings:
        update["override_settings"] = {**settings, **(body.override_settings or {})}
    script_args = app.scripts.args_from_infotext(kind, params)
    mentioned = {str(name).lower() for name in body.alwayson_scripts or {}}
    unmentioned = {name: {"args": args} for name, args in script_args.items() if name not in mentioned}
    if unmentioned:
        update["alwayson_scripts"] = {**(body.alwayson_scripts or {}), **unmentioned}
    return body.model_copy(update=update)


def script_selection(body: GenerationBody, kind: str, app: App) -> ScriptSelection:
    """The body's scripts, checked now (an unknown script or a bad argument is a 422 before queueing)."""
    selection = ScriptSelection(body.script_name, list(body.script_args or []), dict(body.alwayson_scripts or {}))
    app.scripts.for_job(kind, selection)
    return selection


def refuse_unknown_checkpoints(body: GenerationBody, app: App) -> None:
    """`refiner_checkpoint` and (with the hires fix) `hr_checkpoint_name` must name checkpoints in the data dir.

    Checked before the job queues; a path to a file elsewhere is refused like in the settings.
    """
    named = {"refiner_checkpoint": refiner_checkpoint_name(body.refiner_checkpoint)}
    if isinstance(body, m.StableDiffusionTxt2ImgProcessingAPI) and body.enable_hr:
        # as in A1111, only with the hires fix on
        named["hr_checkpoint_name"] = hires_checkpoint_name(body.hr_checkpoint_name)
    for field, name in named.items():
        if name is None:
            continue
        check_model_name_option(app.paths, field, name)
        app.engine.check_checkpoint(field, name)


def accepted_body(body: GenerationBody, kind: str, app: App) -> GenerationBody:
    """The body with its infotext applied."""
    return apply_infotext(body, kind, app)


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
    parameters = body.model_dump()
    if isinstance(body, m.StableDiffusionImg2ImgProcessingAPI) and not body.include_init_images:
        parameters.update(init_images=None, mask=None)  # A1111 echoes the images only when asked to
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


def prepare_txt2img(
    app: App, body: m.StableDiffusionTxt2ImgProcessingAPI
) -> PreparedTask[m.StableDiffusionTxt2ImgProcessingAPI]:
    """Check a txt2img body (a 4xx at once) and make its work; the restart path prepares stored bodies alike."""
    body = accepted_body(body, "txt2img", app)
    refuse_unknown_checkpoints(body, app)
    fields = engine_request_fields(body, Txt2ImgRequest)
    seeds = drawn_seeds(fields)
    request = Txt2ImgRequest(**{**fields, **seeds})
    check_limits(request, app.settings_store.current)
    request.check_prompts(app.settings.prompt_max_length)  # before queueing: a 422 at once
    scripts = script_selection(body, "txt2img", app)
    return PreparedTask(body, lambda control: app.engine.txt2img(request, control, scripts), stored=seeds)


def prepare_img2img(
    app: App, body: m.StableDiffusionImg2ImgProcessingAPI
) -> PreparedTask[m.StableDiffusionImg2ImgProcessingAPI]:
    """Check an img2img body (a 4xx at once) and make its work."""
    body = accepted_body(body, "img2img", app)
    if not body.init_images:
        raise InvalidRequest("init_images", "img2img needs at least one init image")
    refuse_unknown_checkpoints(body, app)
    fields = decode_img2img_images(engine_request_fields(body, Img2ImgRequest), app.settings.img_max_decode_mp)
    seeds = drawn_seeds(fields)
    request = Img2ImgRequest(**{**fields, **seeds})
    check_limits(request, app.settings_store.current)
    request.check_prompts(app.settings.prompt_max_length)  # before queueing: a 422 at once
    scripts = script_selection(body, "img2img", app)
    return PreparedTask(body, lambda control: app.engine.img2img(request, control, scripts), stored=seeds)


def _on_this_machine(path: Path | None) -> Path | None:
    """A saved file's path when this machine has it; a cluster worker on another machine saved it there, and
    the task then keeps its own copy (as for an image not saved) so that it can be fetched by task id."""
    return path if path is not None and path.is_file() else None


def generation_output(result: GenerationResult) -> TaskOutput:
    """What a generation task keeps: the answer's images (grid first), their infotexts, saved files, and info."""
    individual = len(result.images) - result.index_of_first_image
    saved_all = len(result.saved_paths) == individual == len(result.infotexts)
    images = []
    for index, image in enumerate(result.images):
        offset = index - result.index_of_first_image
        if offset < 0:  # the grid
            images.append(OutputImage(image, result.grid_infotext, _on_this_machine(result.grid_path)))
            continue
        infotext = result.infotexts[offset] if offset < len(result.infotexts) else None
        images.append(OutputImage(image, infotext, _on_this_machine(result.saved_paths[offset]) if saved_all else None))
    return TaskOutput(images, result.js(), interrupted=result.interrupted)


@router.post(
    "/txt2img",
    response_model=m.TextToImageResponse,
    description=m.ignored_fields_description(m.StableDiffusionTxt2ImgProcessingAPI),
)
async def txt2img(body: m.StableDiffusionTxt2ImgProcessingAPI, app: AppDep, queue: ClientQueueDep, tasks: TasksDep):
    prepared = prepare_txt2img(app, body)
    job = tasks.submit("txt2img", body, prepared, queue, body.force_task_id)
    return generation_response(await wait_for(job), prepared.body)


@router.post(
    "/img2img",
    response_model=m.ImageToImageResponse,
    description=m.ignored_fields_description(m.StableDiffusionImg2ImgProcessingAPI),
)
async def img2img(body: m.StableDiffusionImg2ImgProcessingAPI, app: AppDep, queue: ClientQueueDep, tasks: TasksDep):
    prepared = prepare_img2img(app, body)
    job = tasks.submit("img2img", body, prepared, queue, body.force_task_id)
    return generation_response(await wait_for(job), prepared.body)


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
