"""The A1111-compatible REST API (`/sdapi/v1/*`) over sdstudio's services.

`create_api` builds a FastAPI app from the composition root's `App` and a `JobQueue`;
every endpoint that touches the device goes through the queue, so the API and the web
UI share one line of work. Endpoints are thin: parse the A1111 body, call a service,
shape the answer as A1111 does.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from sdstudio import __version__
from sdstudio.app import App
from sdstudio.engine.infotext import parse_generation_parameters
from sdstudio.engine.request import HIRES_LATENT_UPSCALERS, Img2ImgRequest, Txt2ImgRequest, decode_base64_image
from sdstudio.engine.samplers import SAMPLERS, SCHEDULE_TYPES
from sdstudio.engine.saving import read_infotext
from sdstudio.engine.service import GenerationControl
from sdstudio.errors import InvalidRequest
from sdstudio.server import api_models as m
from sdstudio.server.auth import basic_auth_dependency, parse_credentials
from sdstudio.server.errors import install_error_handlers
from sdstudio.server.images import encode_image_base64
from sdstudio.engine.job_queue import Job, JobQueue, submit_generation


@dataclass
class ServerOptions:
    """How the server was started; reported by /sdapi/v1/cmd-flags."""

    listen: bool = False
    port: int = 7860
    api_auth: str | None = None
    api: bool = True
    flags: dict[str, Any] = field(default_factory=dict)


async def wait_for(job: Job) -> Any:
    """Await a queued job's result without blocking the event loop."""
    return await asyncio.wrap_future(job.future)


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
        skipped=job.skipped.is_set(),
        interrupted=job.interrupted.is_set(),
        stopping_generation=job.interrupted.is_set(),
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
    return m.ProgressResponse(progress=progress, eta_relative=eta, state=state, current_image=image,
                              textinfo=p.textinfo)


def memory_response() -> m.MemoryResponse:
    """RAM of the machine and this process, and CUDA memory when a GPU is present."""
    import psutil

    process = psutil.Process(os.getpid())
    vm = psutil.virtual_memory()
    ram = {"free": vm.available, "used": process.memory_info().rss, "total": vm.total}
    cuda: dict[str, Any] = {"error": "no CUDA device"}
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            stats = torch.cuda.memory_stats()
            cuda = {
                "system": {"free": free, "used": total - free, "total": total},
                "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
                "allocated": {"current": stats.get("allocated_bytes.all.current", 0), "peak": stats.get("allocated_bytes.all.peak", 0)},
                "reserved": {"current": stats.get("reserved_bytes.all.current", 0), "peak": stats.get("reserved_bytes.all.peak", 0)},
                "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0), "peak": stats.get("inactive_split_bytes.all.peak", 0)},
                "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
            }
    except Exception as exc:  # memory stats are informative only
        cuda = {"error": str(exc)}
    return m.MemoryResponse(ram=ram, cuda=cuda)


def engine_request_fields(body: BaseModel, request_type: type) -> dict[str, Any]:
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


def run_on_queue(queue: JobQueue, kind: str, work: Callable[[GenerationControl], Any], job_id: str | None = None) -> Job:
    """Queue `work(control)` with the job's stop flags and progress record wired in."""
    return submit_generation(queue, kind, work, job_id=job_id)


def generation_response(result, body: BaseModel) -> dict[str, Any]:
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


def sampler_options(row) -> dict[str, Any]:
    """A1111's per-sampler `options` dict (scheduler default, second order, eta/noise use)."""
    options: dict[str, Any] = {}
    if row.default_schedule != "uniform":
        options["scheduler"] = row.default_schedule
    if row.second_order:
        options["second_order"] = True
    if row.uses_eta:
        options["uses_ensd"] = True
    if row.discard_next_to_last_sigma:
        options["discard_next_to_last_sigma"] = True
    return options


def loaded_text_width(app: App) -> int | None:
    """Width of the loaded model's text embeddings (768 SD1, 1024 SD2, 2048 SDXL), if one is loaded."""
    source = app.engine.model_source if app.engine else None
    current = getattr(source, "_current", None)
    if not current:
        return None
    prompt_encoder = getattr(getattr(current[1], "encoder", None), "prompt_encoder", None)
    encoders = getattr(prompt_encoder, "text_encoders", None) or []
    return sum(int(e.get_input_embeddings().weight.shape[1]) for e in encoders) or None


def update_settings(app: App, changes: dict[str, Any]) -> None:
    """Apply option changes (validated; unknown keys kept) and persist them to config.json."""
    from pydantic import ValidationError

    from sdstudio.config import Settings
    from sdstudio.errors import InvalidRequest

    merged = {**app.settings.to_json_dict(), **changes}
    try:
        updated = Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidRequest(".".join(str(p) for p in first["loc"]), first["msg"]) from None
    # Update in place: services hold a reference to this one Settings object.
    for key, value in updated.to_json_dict().items():
        setattr(app.settings, key, value)
    app.save_settings()


def create_api(app: App, queue: JobQueue, options: ServerOptions | None = None) -> FastAPI:
    """The FastAPI application serving /sdapi/v1 over `app`'s services."""
    options = options or ServerOptions()
    api = FastAPI(title="sdstudio", version=__version__,
                  description="A1111-compatible Stable Diffusion API served by sdstudio")
    install_error_handlers(api)
    credentials = parse_credentials(options.api_auth)
    dependencies = [Depends(basic_auth_dependency(credentials))] if credentials else []
    router = APIRouter(prefix="/sdapi/v1", dependencies=dependencies)

    @router.post("/txt2img", response_model=m.TextToImageResponse)
    async def txt2img(body: m.StableDiffusionTxt2ImgProcessingAPI):
        request = Txt2ImgRequest(**engine_request_fields(body, Txt2ImgRequest))
        job = run_on_queue(queue, "txt2img", lambda control: app.engine.txt2img(request, control), body.force_task_id)
        return generation_response(await wait_for(job), body)

    @router.post("/img2img", response_model=m.ImageToImageResponse)
    async def img2img(body: m.StableDiffusionImg2ImgProcessingAPI):
        if not body.init_images:
            raise InvalidRequest("init_images", "img2img needs at least one init image")
        request = Img2ImgRequest(**engine_request_fields(body, Img2ImgRequest))
        job = run_on_queue(queue, "img2img", lambda control: app.engine.img2img(request, control), body.force_task_id)
        return generation_response(await wait_for(job), body)

    @router.post("/png-info", response_model=m.PNGInfoResponse)
    def png_info(body: m.PNGInfoRequest):
        image = decode_base64_image(body.image, "image")
        info = read_infotext(image) or ""
        items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float)) and k != "parameters"}
        if info:
            items["parameters"] = info
        return m.PNGInfoResponse(info=info, items=items, parameters=parse_generation_parameters(info) if info else {})

    @router.get("/samplers", response_model=list[m.SamplerItem])
    def get_samplers():
        return [m.SamplerItem(name=row.name, aliases=list(row.aliases), options=sampler_options(row)) for row in SAMPLERS]

    @router.get("/schedulers", response_model=list[m.SchedulerItem])
    def get_schedulers():
        return [
            m.SchedulerItem(name=row.name, label=row.label, aliases=list(row.aliases) or None,
                            default_rho=row.default_rho if row.default_rho is not None else -1,
                            need_inner_model=False)
            for row in SCHEDULE_TYPES
        ]

    @router.get("/latent-upscale-modes", response_model=list[m.LatentUpscalerModeItem])
    def get_latent_upscale_modes():
        return [m.LatentUpscalerModeItem(name=name) for name in HIRES_LATENT_UPSCALERS]

    @router.get("/sd-models", response_model=list[m.SDModelItem])
    def get_sd_models():
        return [
            m.SDModelItem(title=e.title, model_name=e.model_name, hash=e.shorthash, sha256=e.sha256,
                          filename=str(e.path), config=str(e.config) if e.config else None)
            for e in app.models.list("checkpoint")
        ]

    @router.get("/sd-vae", response_model=list[m.SDVaeItem])
    def get_sd_vae():
        return [m.SDVaeItem(model_name=e.name, filename=str(e.path)) for e in app.models.list("vae", with_hashes=False)]

    @router.get("/upscalers", response_model=list[m.UpscalerItem])
    def get_upscalers():
        return [m.UpscalerItem(**info.to_api_dict()) for info in app.postprocess.upscalers.list(include_unusable=False)]

    @router.get("/face-restorers", response_model=list[m.FaceRestorerItem])
    def get_face_restorers():
        return [m.FaceRestorerItem(name=row.name, cmd_dir=row.cmd_dir) for row in app.postprocess.face_restorers.list()]

    @router.get("/prompt-styles", response_model=list[m.PromptStyleItem])
    def get_prompt_styles():
        app.styles.reload()
        return [m.PromptStyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt)
                for s in app.styles.styles.values()]

    @router.get("/embeddings", response_model=m.EmbeddingsResponse)
    def get_embeddings():
        from sdstudio.prompts.embeddings import EmbeddingDatabase

        database = EmbeddingDatabase(app.paths.folder("embedding"), expected_width=loaded_text_width(app))
        return database.api_listing()

    @router.get("/loras")
    def get_loras():
        from sdstudio.extensions.lora.library import list_loras

        return list_loras(app.loras)

    @router.post("/refresh-loras")
    def refresh_loras():
        return None

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints():
        app.models.list("checkpoint")
        return None

    @router.post("/refresh-vae")
    def refresh_vae():
        app.models.list("vae", with_hashes=False)
        return None

    @router.post("/unload-checkpoint")
    async def unload_checkpoint():
        job = queue.submit("unload-checkpoint", lambda job: app.engine.model_source.unload())
        await wait_for(job)
        return None

    @router.post("/reload-checkpoint")
    async def reload_checkpoint():
        job = queue.submit("reload-checkpoint", lambda job: app.engine.model_source(None) and None)
        await wait_for(job)
        return None

    @router.post("/extra-single-image", response_model=m.ExtrasSingleImageResponse)
    async def extra_single_image(body: m.ExtrasSingleImageRequest):
        from sdstudio.postprocess.extras import ExtrasSingleImageRequest

        request = ExtrasSingleImageRequest(**body.model_dump())
        job = queue.submit("extras", lambda job: app.postprocess.run_single(request, save=False))
        result = await wait_for(job)
        image = result.images[0] if result.images else None
        return m.ExtrasSingleImageResponse(
            html_info=result.html_info,
            image=encode_image_base64(image.image, image.infotext) if image is not None and body.show_extras_results else None,
        )

    @router.post("/extra-batch-images", response_model=m.ExtrasBatchImagesResponse)
    async def extra_batch_images(body: m.ExtrasBatchImagesRequest):
        from sdstudio.postprocess.extras import ExtrasBatchImagesRequest

        request = ExtrasBatchImagesRequest(**body.model_dump())
        job = queue.submit("extras", lambda job: app.postprocess.run_batch(request, save=False))
        result = await wait_for(job)
        images = [encode_image_base64(item.image, item.infotext) for item in result.images] if body.show_extras_results else []
        return m.ExtrasBatchImagesResponse(html_info=result.html_info, images=images)

    @router.get("/progress", response_model=m.ProgressResponse)
    def get_progress(skip_current_image: bool = False):
        return progress_response(queue, skip_current_image)

    @router.post("/interrupt")
    def interrupt():
        queue.interrupt()
        return {}

    @router.post("/skip")
    def skip():
        queue.skip()
        return {}

    @router.get("/options")
    def get_options():
        return app.settings.to_json_dict()

    @router.post("/options")
    async def set_options(changes: dict[str, Any]):
        checkpoint = changes.get("sd_model_checkpoint")
        if checkpoint:
            entry = app.models.find_checkpoint(str(checkpoint))  # NotFound -> 404 naming it
            changes = {**changes, "sd_model_checkpoint": entry.title}
        update_settings(app, changes)
        if checkpoint:
            # load it now, in line with the queue, as A1111 does when the option changes
            await wait_for(queue.submit("load-checkpoint", lambda job: app.engine.model_source(None) and None))
        return None

    @router.get("/cmd-flags")
    def get_cmd_flags():
        return {
            "listen": options.listen,
            "port": options.port,
            "api": options.api,
            "api_auth": "***" if options.api_auth else None,
            "data_dir": str(app.paths.root),
            "ckpt_dir": str(app.paths.folder("checkpoint")),
            "vae_dir": str(app.paths.folder("vae")),
            "lora_dir": str(app.paths.folder("lora")),
            "embeddings_dir": str(app.paths.folder("embedding")),
            "esrgan_models_path": str(app.paths.folder("upscaler", "ESRGAN")),
            "realesrgan_models_path": str(app.paths.folder("upscaler", "RealESRGAN")),
            "gfpgan_models_path": str(app.paths.folder("face_restorer", "GFPGAN")),
            "codeformer_models_path": str(app.paths.folder("face_restorer", "Codeformer")),
            "no_half_vae": app.settings.no_half_vae,
            **options.flags,
        }

    @router.get("/memory", response_model=m.MemoryResponse)
    def get_memory():
        return memory_response()

    @router.get("/scripts", response_model=m.ScriptsList)
    def get_scripts():
        return m.ScriptsList(txt2img=[], img2img=[])

    @router.get("/script-info")
    def get_script_info():
        return []

    @router.get("/extensions", response_model=list[m.ExtensionItem])
    def get_extensions():
        return []

    api.include_router(router)
    api.state.sdstudio = app
    api.state.queue = queue
    return api
