"""Settings and server facts: options, cmd-flags, prompt styles, samplers, schedulers, memory."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from sdstudio.app import App
from sdstudio.engine.option_changes import checked_option_changes, checkpoint_not_loaded, submit_checkpoint_load
from sdstudio.engine.samplers import SAMPLERS, SCHEDULE_TYPES
from sdstudio.errors import SdStudioError
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, OptionsDep, wait_for

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


@router.get("/options")
def get_options(app: AppDep):
    return app.settings.to_json_dict()


@router.post("/options")
async def set_options(changes: dict[str, Any], app: AppDep, queue: ClientQueueDep):
    changes = checked_option_changes(app.settings_store, app.models, changes)  # NotFound (404) names a model
    # A new checkpoint is loaded first (a place in the queue like any job of this client's) and the
    # changes saved only once it loaded: a file that cannot be loaded never becomes the selected one.
    job = submit_checkpoint_load(app.settings_store, app.checkpoints, queue, changes)
    if job is not None:
        try:
            await wait_for(job)
        except SdStudioError as exc:
            raise checkpoint_not_loaded(exc) from None
    app.settings_store.change(changes)
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
        "hypernetwork_dir": str(app.paths.folder("hypernetwork")),
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
