"""Tasks: the stored API jobs by id (list, get, cancel, requeue, clear history, pause/resume) and progress by id.

Every txt2img, img2img and extras request is a task (server.tasks), stored before it is queued;
`/sdapi/v1/tasks/txt2img` and `/img2img` queue one without waiting for it. A1111's
`/internal/progress` answers for a task id (its `force_task_id`) as A1111's web UI asks.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from sdstudio.engine.job_queue import JobQueue
from sdstudio.engine.task_store import TaskRecord, TaskSource, TaskState
from sdstudio.errors import NotFound
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, QueueDep, TasksDep
from sdstudio.server.images import encode_image_base64
from sdstudio.server.routes.generation import generation_output, prepare_img2img, prepare_txt2img
from sdstudio.server.routes.postprocess import (
    EXTRAS_BATCH,
    EXTRAS_SINGLE,
    extras_output,
    prepare_extras_batch,
    prepare_extras_single,
)
from sdstudio.server.tasks import TaskKind, TaskRunner

TASK_KINDS = MappingProxyType(
    {
        "txt2img": TaskKind(m.StableDiffusionTxt2ImgProcessingAPI, prepare_txt2img, generation_output),
        "img2img": TaskKind(m.StableDiffusionImg2ImgProcessingAPI, prepare_img2img, generation_output),
        EXTRAS_SINGLE: TaskKind(m.ExtrasSingleImageRequest, prepare_extras_single, extras_output),
        EXTRAS_BATCH: TaskKind(m.ExtrasBatchImagesRequest, prepare_extras_batch, extras_output),
    }
)
"""Every kind of task: how the routes and the restart path turn a stored body into work, and what a result keeps."""

TASK_LIST_CEILING = 1_000_000
"""Most tasks one listing may ask for; SQLite's LIMIT is a 64-bit integer, a larger one is a client error, not a 500."""

router = APIRouter(prefix="/tasks", tags=["tasks"])
internal_router = APIRouter(prefix="/internal", tags=["tasks"])


class TaskImage(BaseModel):
    """One result image of a task: where it is on the server's disk, its infotext, and its URL."""

    index: int
    path: str = Field(description="The file on the server: in the outputs when the request saved it, else the task's")
    infotext: str | None
    url: str = Field(description="GET it for the file itself")


class TaskItem(BaseModel):
    """A task as listed."""

    id: str = Field(description="The task id: the request's force_task_id, else a new one")
    kind: str = Field(description="txt2img, img2img, extras-single-image or extras-batch-images")
    state: TaskState
    client: str | None = Field(description="Who submitted it: the API user, else the address")
    source: TaskSource = Field(
        description="api: queued over this API (runs again after a restart, can be requeued); ui: the web UI's "
        "Generate (kept to show, not run again)"
    )
    created_at: float = Field(description="Seconds since the epoch, as every time here")
    queued_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int = Field(description="Runs begun; 2 when it was run again after the server stopped mid-run")
    position: int | None = Field(description="0 while it runs, N for the N-th waiting task, else null")
    error: str | None
    images: list[TaskImage]


class TaskDetail(TaskItem):
    """A task with its request (the body as received) and A1111's info object of its result."""

    request: dict[str, Any] = Field(
        description="The body as received; a seed or subseed -1 is stored as the one drawn for it, so a re-run "
        "(after a restart, or requeued) makes the same images"
    )
    info: dict[str, Any] | None


class TaskList(BaseModel):
    paused: bool = Field(description="Whether the queue starts no new task (pause/resume)")
    tasks: list[TaskItem]


class QueueState(BaseModel):
    paused: bool


class ClearedHistory(BaseModel):
    removed: int = Field(description="How many finished tasks were removed")


class ProgressRequest(m.RequestBody):
    """A1111's /internal/progress body."""

    id_task: str | None = Field(default=None, description="The task id (the request's force_task_id)")
    id_live_preview: int = Field(default=-1, description="The id of the last live preview received")
    live_preview: bool = Field(default=True, description="Whether to include the live preview image")


class InternalProgressResponse(BaseModel):
    """A1111's /internal/progress answer."""

    active: bool = Field(description="Whether the task runs now")
    queued: bool = Field(description="Whether the task waits in the queue")
    completed: bool = Field(description="Whether the task has finished")
    progress: float | None = Field(default=None, description="0 to 1")
    eta: float | None = Field(default=None, description="Seconds until it is done")
    live_preview: str | None = Field(default=None, description="The current live preview as a data: URI")
    id_live_preview: int | None = Field(default=None, description="Send it with the next request")
    textinfo: str | None = Field(default=None, description="What the web UI shows")


def task_item(record: TaskRecord, waiting: list[str], running: set[str], detail: bool = False) -> TaskItem:
    """The wire form of a stored task; `waiting` and `running` are the queue's ids now."""
    position = None
    if record.state is TaskState.RUNNING and record.id in running:
        position = 0
    elif record.id in waiting:
        position = waiting.index(record.id) + 1
    images = [
        TaskImage(index=i, path=f.path, infotext=f.infotext, url=f"/sdapi/v1/tasks/{record.id}/images/{i}")
        for i, f in enumerate(record.files)
    ]
    fields: dict[str, Any] = dict(
        id=record.id,
        kind=record.kind,
        state=record.state,
        client=record.client,
        source=record.source,
        created_at=record.created_at,
        queued_at=record.queued_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempts=record.attempts,
        position=position,
        error=record.error,
        images=images,
    )
    if detail:
        return TaskDetail(**fields, request=record.request, info=record.info)
    return TaskItem(**fields)


def describe(tasks: TaskRunner, record: TaskRecord, detail: bool = False) -> TaskItem:
    """One task with its place in the queue now."""
    return task_item(record, tasks.queue.waiting_ids(), running_ids(tasks.queue), detail)


def running_ids(queue: JobQueue) -> set[str]:
    """The ids of the jobs running now (several when the queue feeds several devices)."""
    return {job.id for job in queue.running}


@router.get(
    "",
    response_model=TaskList,
    description="The stored tasks in the order they were accepted: queued, running and history (finished ones "
    "until the history is cleared). `state` (repeatable) keeps only those states; `limit` the first N.",
)
def list_tasks(
    tasks: TasksDep,
    state: Annotated[list[TaskState] | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=0, le=TASK_LIST_CEILING)] = None,
):
    waiting, running = tasks.queue.waiting_ids(), running_ids(tasks.queue)
    records = tasks.store.select(state or (), limit)
    return TaskList(paused=tasks.queue.paused, tasks=[task_item(r, waiting, running) for r in records])


@router.post(
    "/txt2img",
    response_model=TaskItem,
    status_code=202,
    description="Queue a txt2img task (the /sdapi/v1/txt2img body) and answer at once with the task; poll "
    "GET /sdapi/v1/tasks/{id} or /internal/progress for it. Checked as /txt2img checks it (4xx before queueing).",
)
def submit_txt2img(body: m.StableDiffusionTxt2ImgProcessingAPI, app: AppDep, queue: ClientQueueDep, tasks: TasksDep):
    job = tasks.submit("txt2img", body, prepare_txt2img(app, body), queue, body.force_task_id)
    return describe(tasks, tasks.store.get(job.id))


@router.post(
    "/img2img",
    response_model=TaskItem,
    status_code=202,
    description="Queue an img2img task (the /sdapi/v1/img2img body) and answer at once with the task.",
)
def submit_img2img(body: m.StableDiffusionImg2ImgProcessingAPI, app: AppDep, queue: ClientQueueDep, tasks: TasksDep):
    job = tasks.submit("img2img", body, prepare_img2img(app, body), queue, body.force_task_id)
    return describe(tasks, tasks.store.get(job.id))


@router.delete(
    "",
    response_model=ClearedHistory,
    description="Clear the history: remove every finished task (done, failed, interrupted, cancelled) and the "
    "result images kept for it. Images a request saved to the outputs (save_images) stay.",
)
def clear_history(tasks: TasksDep):
    return ClearedHistory(removed=tasks.clear_history())


@router.post(
    "/pause",
    response_model=QueueState,
    description="Pause the queue: the running task finishes, no other starts until resume. New tasks are "
    "still accepted. The pause is stored: a restarted server stays paused until resume.",
)
def pause(tasks: TasksDep):
    tasks.set_paused(True)
    return QueueState(paused=True)


@router.post("/resume", response_model=QueueState, description="Start waiting tasks again after a pause.")
def resume(tasks: TasksDep):
    tasks.set_paused(False)
    return QueueState(paused=False)


@router.get(
    "/{task_id}",
    response_model=TaskDetail,
    description="One task: its state, the request as received, its result images (paths and infotexts) and "
    "A1111's info object. 404 when there is no such task (or its history was cleared).",
)
def get_task(task_id: str, tasks: TasksDep):
    return describe(tasks, tasks.store.get(task_id), detail=True)


@router.get(
    "/{task_id}/images/{index}",
    response_class=FileResponse,
    description="Result image `index` (from 0, as listed in the task's images) of a task, as a file.",
)
def get_task_image(task_id: str, index: int, tasks: TasksDep):
    files = tasks.store.get(task_id).files
    if not 0 <= index < len(files):
        raise NotFound(f"task {task_id!r} has {len(files)} result image(s); there is no image {index}")
    path = Path(files[index].path)
    if not path.is_file():
        raise NotFound(f"result image {index} of task {task_id!r} is no longer on disk")
    return FileResponse(path)


@router.post(
    "/{task_id}/cancel",
    response_model=TaskItem,
    description="Cancel a queued task (it will not run; a request waiting for it is answered 409), or interrupt "
    "the running one (it ends as `interrupted`, keeping the images made so far). 409 for a finished task.",
)
def cancel_task(task_id: str, tasks: TasksDep):
    return describe(tasks, tasks.cancel(task_id))


@router.post(
    "/{task_id}/requeue",
    response_model=TaskItem,
    description="Queue a finished task (done, failed, interrupted or cancelled) again, at the end of the queue, "
    "from its stored request; its previous results are forgotten. 409 for a queued or running task.",
)
def requeue_task(task_id: str, tasks: TasksDep):
    return describe(tasks, tasks.requeue(task_id))


def task_progress(queue: JobQueue, tasks: TaskRunner, request: ProgressRequest) -> InternalProgressResponse:
    """A1111's progressapi: where the task is (running, waiting, finished), and for the running one how far."""
    job = next((job for job in queue.running if job.id == request.id_task), None)
    active = job is not None
    waiting = queue.waiting_ids()
    queued = request.id_task in waiting
    record = tasks.store.find(request.id_task) if request.id_task else None
    completed = record is not None and record.finished
    if job is None or not active:
        textinfo = "Waiting..."
        if queued:
            textinfo = f"In queue: {waiting.index(request.id_task or '') + 1}/{len(waiting)}"
            if queue.paused:
                textinfo += " (queue paused)"
        return InternalProgressResponse(
            active=False, queued=queued, completed=completed, id_live_preview=-1, textinfo=textinfo
        )
    progress = job.fraction_done()
    elapsed = time.time() - (job.started_at or time.time())
    eta = elapsed / progress - elapsed if progress > 0 else None
    live_preview, id_live_preview = None, request.id_live_preview
    p = job.progress
    if request.live_preview and p.preview is not None and p.preview_id != request.id_live_preview:
        live_preview = "data:image/png;base64," + encode_image_base64(p.preview)
        id_live_preview = p.preview_id
    return InternalProgressResponse(
        active=True,
        queued=False,
        completed=False,
        progress=progress,
        eta=eta,
        live_preview=live_preview,
        id_live_preview=id_live_preview,
        textinfo=p.textinfo,
    )


@internal_router.post(
    "/progress",
    response_model=InternalProgressResponse,
    description="A1111's task progress by id: whether the task `id_task` runs, waits or has finished; for the "
    "running one its progress (0-1), ETA in seconds, and the live preview newer than `id_live_preview`.",
)
def internal_progress(body: ProgressRequest, queue: QueueDep, tasks: TasksDep):
    return task_progress(queue, tasks, body)


@internal_router.get(
    "/progress",
    response_model=InternalProgressResponse,
    description="The same as POST /internal/progress, its fields as query parameters.",
)
def internal_progress_query(
    queue: QueueDep, tasks: TasksDep, id_task: str | None = None, id_live_preview: int = -1, live_preview: bool = True
):
    return task_progress(
        queue, tasks, ProgressRequest(id_task=id_task, id_live_preview=id_live_preview, live_preview=live_preview)
    )
