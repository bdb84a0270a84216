"""Settings and server facts: options, cmd-flags, prompt styles, samplers, schedulers, memory."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from sdstudio.app import App
from sdstudio.engine.samplers import SAMPLERS, SCHEDULE_TYPES
from sdstudio.errors import InvalidRequest, ModelLoadError, SdStudioError
from sdstudio.models.registry import SD_VAE_AUTOMATIC, SD_VAE_NONE, ModelEntry
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, OptionsDep, QueueDep, wait_for

router = APIRouter()


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


def memory_response(app: App) -> m.MemoryResponse:
    """RAM of the machine and this process, CUDA memory when a GPU is present, and the loaded models."""
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
                "active": {
                    "current": stats.get("active_bytes.all.current", 0),
                    "peak": stats.get("active_bytes.all.peak", 0),
                },
                "allocated": {
                    "current": stats.get("allocated_bytes.all.current", 0),
                    "peak": stats.get("allocated_bytes.all.peak", 0),
                },
                "reserved": {
                    "current": stats.get("reserved_bytes.all.current", 0),
                    "peak": stats.get("reserved_bytes.all.peak", 0),
                },
                "inactive": {
                    "current": stats.get("inactive_split_bytes.all.current", 0),
                    "peak": stats.get("inactive_split_bytes.all.peak", 0),
                },
                "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
            }
    except Exception as exc:  # memory stats are informative only
        cuda = {"error": str(exc)}
    return m.MemoryResponse(ram=ram, cuda=cuda, models=app.memory.report())


def refuse_unusable(option: str, entry: ModelEntry) -> None:
    """A model file that cannot be used (empty, cut short...) is refused before the option is saved."""
    try:
        entry.require_usable()
    except ModelLoadError as exc:
        raise InvalidRequest(option, str(exc)) from None


@router.get("/options")
def get_options(app: AppDep):
    return app.settings.to_json_dict()


@router.post("/options")
async def set_options(changes: dict[str, Any], app: AppDep, queue: QueueDep):
    store = app.settings_store
    store.check(changes)  # refused values (a path outside the data dir, a NaN...) fail before any lookup
    checkpoint = changes.get("sd_model_checkpoint")
    if checkpoint:
        entry = app.models.find_checkpoint(str(checkpoint))  # NotFound -> 404 naming it
        refuse_unusable("sd_model_checkpoint", entry)
        changes = {**changes, "sd_model_checkpoint": entry.title}
    vae = changes.get("sd_vae")
    if isinstance(vae, str) and vae.strip() not in ("", SD_VAE_AUTOMATIC, SD_VAE_NONE):
        refuse_unusable("sd_vae", app.models.find("vae", vae, with_hashes=False))
    if checkpoint:
        # Load it now, in line with the queue, as A1111 does when the option changes, and save
        # only once it loaded: a file that cannot be loaded never becomes the selected checkpoint.
        settings = store.pending(changes)
        try:
            await wait_for(queue.submit("load-checkpoint", lambda job: app.checkpoints(None, settings) and None))
        except SdStudioError as exc:
            raise InvalidRequest("sd_model_checkpoint", f"{exc}; the previous checkpoint stays selected") from None
    store.change(changes)
    return None


@router.get("/cmd-flags")
def get_cmd_flags(app: AppDep, options: OptionsDep):
    return {
        "listen": options.listen,
        "port": options.port,
        "api": options.api,
        "api_auth": "***" if options.api_auth else None,
        "api_server_stop": options.api_server_stop,
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


@router.get("/prompt-styles", response_model=list[m.PromptStyleItem])
def get_prompt_styles(app: AppDep):
    app.styles.reload()
    return [
        m.PromptStyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt)
        for s in app.styles.styles.values()
    ]


@router.get("/samplers", response_model=list[m.SamplerItem])
def get_samplers():
    return [m.SamplerItem(name=row.name, aliases=list(row.aliases), options=sampler_options(row)) for row in SAMPLERS]


@router.get("/schedulers", response_model=list[m.SchedulerItem])
def get_schedulers():
    return [
        m.SchedulerItem(
            name=row.name,
            label=row.label,
            aliases=list(row.aliases) or None,
            default_rho=row.default_rho if row.default_rho is not None else -1,
            need_inner_model=False,
        )
        for row in SCHEDULE_TYPES
    ]


@router.get("/memory", response_model=m.MemoryResponse)
def get_memory(app: AppDep):
    return memory_response(app)
