"""API jobs as tasks that outlive the process: written to the task store before they are queued.

Every generation and extras request the API accepts becomes a task: its body (as received,
after validation; a seed -1 stored as the seed drawn for it, so a re-run makes the same images)
is committed to `DATA_DIR/tasks/tasks.sqlite3` before the job joins the queue, and the task's
state, attempts, result files and infotexts are kept there. At start, `TaskRunner.resume` runs
the tasks a previous process left queued, in order, and re-queues a task it left running once
(setting `tasks_requeue_interrupted`). A paused queue stays paused across a restart.

A task is re-created from its stored body the way its route makes one: `TaskKind`s (one per
kind, a table the routes define) turn a body into a runnable job (`prepare`) and a result into
what is kept (`output`), so the live request and the restart path share the same checks.

Result files. Images the job saved (`save_images`) are listed where they were saved; the others
are written once, as PNG with their infotext, to `DATA_DIR/tasks/results/<seq>/` when the task
finishes. Every file an attempt writes is recorded in the store just before it is written; an
attempt that dies with the process is followed by one that first deletes what the dead one
wrote (the same images again, from the same seeds), so the outputs hold each image once and a
task lists only its final attempt's files. Clearing history removes the tasks and their
results folders; images saved to the outputs stay, as they belong to the user.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from PIL import Image
from pydantic import BaseModel, ValidationError

from sdstudio.config import atomic_write_bytes
from sdstudio.engine.job_queue import ClientQueue, Job, JobQueue, JobSubmitter, QueueLimits, submit_generation
from sdstudio.engine.saving import encode_image
from sdstudio.engine.task_store import TaskFile, TaskRecord, TaskSource, TaskState, TaskStore
from sdstudio.errors import Conflict, InvalidRequest, SdStudioError
from sdstudio.server.errors import is_out_of_memory

if TYPE_CHECKING:
    from sdstudio.app import App
    from sdstudio.engine.service import GenerationControl

log = logging.getLogger("sdstudio.server.tasks")

TASKS_FOLDER = "tasks"
"""Under the data dir: the store and the results it points to, together (one folder to back up or delete).

Not under cache/: a cache may be deleted at will, this holds queued work and the history clients ask for.
"""

TASK_ID_MAX_LENGTH = 200


Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class PreparedTask(Generic[Body]):
    """A checked request, ready to queue: the body as accepted (its answer echoes it) and the work."""

    body: Body
    work: Callable[[GenerationControl], Any]
    stored: Mapping[str, Any] = field(default_factory=dict)
    """Fields the preparation settled that the task stores over the body received (a seed -1 drawn): a re-run
    prepares the stored body and so does the same work."""


@dataclass(frozen=True)
class OutputImage:
    """One image a task produced, its infotext, and the file it was saved to (None: not saved)."""

    image: Image.Image
    infotext: str | None
    saved: Path | None = None


@dataclass(frozen=True)
class TaskOutput:
    """What a finished task keeps: its images, A1111's info object, whether it was interrupted."""

    images: list[OutputImage]
    info: dict[str, Any]
    interrupted: bool = False


@dataclass(frozen=True)
class TaskKind:
    """One kind of task: its body type, how a body becomes work (checks raise 4xx errors), what a result keeps."""

    body_type: type[BaseModel]
    prepare: Callable[[App, Any], PreparedTask[Any]]
    output: Callable[[Any], TaskOutput]


def check_task_id(task_id: str) -> None:
    """A forced task id must fit in a URL path segment: no '/', no control characters, at most 200 characters."""
    if len(task_id) > TASK_ID_MAX_LENGTH:
        raise InvalidRequest("force_task_id", f"a task id has at most {TASK_ID_MAX_LENGTH} characters")
    if "/" in task_id or any(ord(char) < 32 or ord(char) == 127 for char in task_id):
        raise InvalidRequest("force_task_id", "a task id may not contain '/' or control characters")


def new_task_id() -> str:
    """A fresh task id in A1111's spelling."""
    return f"task({uuid.uuid4().hex[:15]})"


def failure_text(exc: BaseException, task_id: str) -> str:
    """What a failed task says: a user error's message; for a bug only that it happened (the log has it)."""
    if isinstance(exc, SdStudioError):
        return str(exc)
    if is_out_of_memory(exc):
        return "the job was too large for the memory available; try a smaller width and height or batch size"
    log.error("task %s failed", task_id, exc_info=exc)
    return f"internal error ({type(exc).__name__}); the server log has the details under task {task_id}"


def remove_files(paths: tuple[str, ...]) -> None:
    """Delete files a dead attempt wrote (those already gone are fine)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


class TaskRunner:
    """Puts API jobs on the queue as stored tasks, runs them, and answers for them by id."""

    def __init__(self, app: App, queue: JobQueue, store: TaskStore, kinds: Mapping[str, TaskKind], folder: Path):
        self.app = app
        self.queue = queue
        self.store = store
        self.kinds = kinds
        self.results = folder / "results"

    @classmethod
    def open(cls, app: App, queue: JobQueue, kinds: Mapping[str, TaskKind]) -> TaskRunner:
        """The runner over the data dir's task store (created when missing)."""
        folder = app.paths.root / TASKS_FOLDER
        return cls(app, queue, TaskStore(folder / "tasks.sqlite3"), kinds, folder)

    def result_folder(self, record: TaskRecord) -> Path:
        """Where the task's unsaved result images are written."""
        return self.results / str(record.seq)

    def submit(
        self, kind: str, received: BaseModel, prepared: PreparedTask[Any], submitter: ClientQueue, task_id: str | None
    ) -> Job:
        """Store the task (committed), then queue it; the job's future gives the engine's result.

        `received` is the body as the client sent it (what a restart prepares again). A queue
        over its limits refuses the job and the task is removed again.
        """
        if task_id:  # A1111 clients send "" for "none"
            check_task_id(task_id)
        else:
            task_id = new_task_id()
        if self.queue.find(task_id) is not None:
            raise Conflict(f"force_task_id: a job with id {task_id!r} is queued or running; give each its own id")
        request = {**received.model_dump(mode="json", exclude_unset=True), **prepared.stored}
        return self._store_and_queue(kind, task_id, request, prepared, submitter, TaskSource.API)

    def submit_ui(
        self, kind: str, request: dict[str, Any], work: Callable[[GenerationControl], Any], submitter: ClientQueue
    ) -> Job:
        """Store a web UI job as a task (its plain request fields, to show) and queue `work`; the job as `submit`'s.

        Its start, files and end are stored as an API task's are, so the Queue tab lists it; it is
        not run again after a restart nor requeued (its images and scripts are not stored).
        """
        prepared: PreparedTask[Any] = PreparedTask(body=None, work=work)
        return self._store_and_queue(kind, new_task_id(), request, prepared, submitter, TaskSource.UI)

    def _store_and_queue(
        self,
        kind: str,
        task_id: str,
        request: dict[str, Any],
        prepared: PreparedTask[Any],
        submitter: ClientQueue,
        source: TaskSource,
    ) -> Job:
        replaced = self.store.add(task_id, kind, request, submitter.client, source)
        if replaced is not None:
            shutil.rmtree(self.result_folder(replaced), ignore_errors=True)
        try:
            return self._queue(kind, task_id, prepared, submitter)
        except BaseException:
            self.store.delete(task_id)
            raise

    def _queue(self, kind: str, task_id: str, prepared: PreparedTask[Any], submitter: JobSubmitter) -> Job:
        return submit_generation(submitter, kind, self._attempt(task_id, self.kinds[kind], prepared), job_id=task_id)

    def _attempt(self, task_id: str, kind: TaskKind, prepared: PreparedTask[Any]) -> Callable[[GenerationControl], Any]:
        """The job: one attempt at the task, its start, files and end written to the store."""

        def run(control: GenerationControl) -> Any:
            before = self.store.get(task_id)
            remove_files(before.written)  # a dead attempt's partial outputs: this one makes them again
            shutil.rmtree(self.result_folder(before), ignore_errors=True)
            record = self.store.start(task_id)
            control = replace(control, on_file=lambda path: self.store.record_file(task_id, str(path)))
            try:
                result = prepared.work(control)
                output = kind.output(result)
                files = self._keep(record, output.images)
            except BaseException as exc:
                self.store.finish(task_id, TaskState.FAILED, error=failure_text(exc, task_id))
                raise
            state = TaskState.INTERRUPTED if output.interrupted else TaskState.DONE
            self.store.finish(task_id, state, files, output.info)
            return result

        return run

    def _keep(self, record: TaskRecord, images: list[OutputImage]) -> list[TaskFile]:
        """The task's result files: saved images where they are, the others written to its results folder."""
        files = []
        folder = self.result_folder(record)
        for index, output in enumerate(images):
            path = output.saved
            if path is None:
                path = folder / f"{index:03}.png"
                self.store.record_file(record.id, str(path))
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, encode_image(output.image, "png", output.infotext))
            files.append(TaskFile(str(path), output.infotext))
        return files

    def _enqueue_stored(self, record: TaskRecord) -> None:
        """Queue a stored task again from its body; one that no longer passes the checks fails with the reason."""
        kind = self.kinds.get(record.kind)
        try:
            if kind is None:
                raise InvalidRequest("kind", f"unknown task kind {record.kind!r}")
            prepared = kind.prepare(self.app, kind.body_type.model_validate(record.request))
        except (SdStudioError, ValidationError) as exc:
            self.store.finish(record.id, TaskState.FAILED, error=f"the stored request is refused now: {exc}")
            return
        # Admitted when it was accepted: no limits now, and no client view of the queue to count it against.
        submitter = ClientQueue(self.queue, record.client or "restored task", QueueLimits())
        self._queue(record.kind, record.id, prepared, submitter)

    def resume(self) -> list[str]:
        """At start: queue the tasks a previous process left (its running one again, once); returns their ids.

        A queue paused then is paused again first: its tasks wait for POST /sdapi/v1/tasks/resume.
        """
        if self.store.paused:
            self.queue.pause()
        requeue = self.app.settings_store.current.tasks_requeue_interrupted
        queued = self.store.recover(requeue_interrupted=requeue)
        for record in queued:
            self._enqueue_stored(record)
        return [record.id for record in queued]

    def set_paused(self, paused: bool) -> None:
        """Pause the queue (the running job finishes, no other starts) or start it again; kept across restarts."""
        self.store.set_paused(paused)
        if paused:
            self.queue.pause()
        else:
            self.queue.resume()

    def requeue(self, task_id: str) -> TaskRecord:
        """Run a finished task again as a fresh one, at the end of the queue (an API task: its body is stored)."""
        old = self.store.get(task_id)
        if old.source is TaskSource.UI:
            raise Conflict(
                f"task {task_id!r} was a web UI job: its images and scripts are not stored; generate it again there"
            )
        record = self.store.requeue(task_id)
        shutil.rmtree(self.result_folder(old), ignore_errors=True)
        self._enqueue_stored(record)
        return self.store.get(task_id)

    def cancel(self, task_id: str) -> TaskRecord:
        """Take a queued task off the queue, or interrupt a running one (it keeps what it made)."""
        record = self.store.get(task_id)
        if record.finished:
            raise Conflict(f"task {task_id!r} is {record.state} already")
        if self.queue.cancel(task_id, f"task {task_id} was cancelled before it ran"):
            self.store.cancel(task_id)
        else:
            job = self.queue.find(task_id)
            if job is not None:
                job.interrupt()
            elif record.state is TaskState.QUEUED:  # stored but not in this process's queue
                self.store.cancel(task_id)
        return self.store.get(task_id)

    def clear_history(self) -> int:
        """Remove the finished tasks and their results folders; returns how many went."""
        removed = self.store.clear_finished()
        for record in removed:
            shutil.rmtree(self.result_folder(record), ignore_errors=True)
        return len(removed)
