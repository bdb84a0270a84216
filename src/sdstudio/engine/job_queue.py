"""The job queue in front of the one generation engine.

Requests are accepted concurrently and run one at a time, in arrival order, on a single
worker thread (the device is one resource; A1111 serialises with a lock, which gives no
order and no queue position). A queue in front of several devices (`sdstudio serve --cluster`:
the work runs on Ray Serve replicas) has one worker thread per device, still taking jobs in
order. Each job has an id, a future for its result, and a live progress record that
`/sdapi/v1/progress` reads. Interrupt and skip act on a running job only. A job that
raises answers its own request with the error; the worker goes on.
A client that goes away leaves its job to finish (or be interrupted); nothing waits on it.
A submission may carry `QueueLimits`: how many jobs may wait in all and per client; over
them it is refused at once (`QueueFull`, `ClientQueueFull`) with a time to retry after.
A waiting job can be taken off the queue by id (`cancel`); a paused queue finishes the
running job and starts no other until it is resumed.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sdstudio.config import Settings
from sdstudio.engine.cancel import CancelToken
from sdstudio.errors import Conflict, SdStudioError

if TYPE_CHECKING:  # only for annotations: the queue itself needs no torch
    from sdstudio.engine.job_context import ProgressEvent
    from sdstudio.models.merge import CheckpointMerger, MergeRequest


@dataclass(frozen=True)
class QueueLimits:
    """How many jobs may wait behind the running one: in all, and per client (0 = no bound)."""

    waiting: int = 0
    waiting_per_client: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueLimits:
        """The limits the settings set (limit_queued_jobs, limit_queued_jobs_per_client)."""
        return cls(settings.limit_queued_jobs, settings.limit_queued_jobs_per_client)


class QueueFull(SdStudioError):
    """The queue holds as many waiting jobs as it may; `retry_after` is a guess in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ClientQueueFull(QueueFull):
    """This client has as many jobs waiting as one client may."""


class JobCancelled(Conflict):
    """The job was taken off the queue before it ran (what its waiting request is answered)."""


@dataclass
class JobProgress:
    """What the running job last reported; read by the progress endpoint."""

    sampling_step: int = 0
    sampling_steps: int = 0
    job_no: int = 0
    job_count: int = 1
    textinfo: str | None = None
    preview: Any = None  # a PIL image, when the engine produced one
    preview_id: int = 0


@dataclass
class Job:
    """One queued unit of work and its controls."""

    id: str
    kind: str
    run: Callable[[Job], Any]
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    future: Future[Any] = field(default_factory=Future)
    progress: JobProgress = field(default_factory=JobProgress)
    cancel: CancelToken = field(default_factory=CancelToken)
    client: str | None = None  # who submitted it (API user or address), for the per-client bound

    def interrupt(self) -> None:
        """Stop after the current step, keeping what is finished."""
        self.cancel.interrupt()

    def skip(self) -> None:
        """Abandon the current image and go on with the next one."""
        self.cancel.skip()

    def report(self, textinfo: str, done: int, total: int) -> None:
        """Progress of work that is not sampling (a merge, a scan): what it does now, and items done of all."""
        p = self.progress
        p.textinfo, p.sampling_step, p.sampling_steps = textinfo, done, total

    def fraction_done(self) -> float:
        """Overall progress in [0, 1] as A1111 computes it (images done + current steps)."""
        p = self.progress
        if p.job_count <= 0:
            return 0.0
        done = p.job_no / p.job_count
        if p.sampling_steps > 0:
            done += (p.sampling_step / p.sampling_steps) / p.job_count
        return min(max(done, 0.0), 1.0)


class JobQueue:
    """FIFO queue with `workers` worker threads (one per device); `start()` must be called before jobs run."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("a job queue needs at least one worker")
        self.workers = workers
        self._pending: deque[Job] = deque()
        self._condition = threading.Condition()
        self._running: list[Job] = []  # in the order they started
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._paused = False
        self._counter = itertools.count(1)
        self._last_duration: float | None = None

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._condition:
            if self._threads:
                return
            self._stopping = False
            for number in range(self.workers):
                name = "sdstudio-jobs" if self.workers == 1 else f"sdstudio-jobs-{number + 1}"
                self._threads.append(threading.Thread(target=self._work, name=name, daemon=True))
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Interrupt the running jobs, cancel pending ones, and end the workers."""
        with self._condition:
            self._stopping = True
            for job in self._running:
                job.interrupt()
            while self._pending:
                self._pending.popleft().future.cancel()
            self._condition.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)

    def submit(
        self,
        kind: str,
        run: Callable[[Job], Any],
        job_id: str | None = None,
        *,
        client: str | None = None,
        limits: QueueLimits | None = None,
    ) -> Job:
        """Queue `run(job)`; returns the job at once (its future gives the result).

        With `limits`, a job over them is refused (QueueFull, ClientQueueFull) instead of queued.
        """
        job = Job(id=job_id or f"task({uuid.uuid4().hex[:15]})", kind=kind, run=run, client=client)
        with self._condition:
            if self._stopping:
                raise RuntimeError("the job queue is shutting down")
            if limits is not None:
                self._admit(client, limits)
            self._pending.append(job)
            self._condition.notify_all()
        return job

    def _admit(self, client: str | None, limits: QueueLimits) -> None:
        """Raise when one more waiting job (from `client`) would be over `limits`; call with the lock held."""
        waiting = len(self._pending)
        if limits.waiting and waiting >= limits.waiting:
            raise QueueFull(
                f"the job queue is full: {waiting} jobs are waiting (limit_queued_jobs); try again later",
                self._retry_after(),
            )
        if client is not None and limits.waiting_per_client:
            mine = sum(1 for job in self._pending if job.client == client)
            if mine >= limits.waiting_per_client:
                raise ClientQueueFull(
                    f"you have {mine} jobs waiting, the most one client may (limit_queued_jobs_per_client); "
                    "try again when one has started",
                    self._retry_after(),
                )

    def _retry_after(self) -> int:
        """Seconds until a place is likely to free up: about one job's time (the last one's), 1 to 60."""
        if self._last_duration is None:
            return 5
        return min(max(round(self._last_duration), 1), 60)

    @property
    def current(self) -> Job | None:
        """The running job (of several, the one that started first), if any."""
        with self._condition:
            return self._running[0] if self._running else None

    @property
    def running(self) -> list[Job]:
        """The running jobs, the one that started first first (one at most with one worker)."""
        with self._condition:
            return list(self._running)

    def pending_count(self) -> int:
        """Jobs waiting behind the running one."""
        with self._condition:
            return len(self._pending)

    def position(self, job: Job) -> int | None:
        """0 for the running job, N for the N-th waiting one, None when finished."""
        with self._condition:
            if job in self._running:
                return 0
            for index, waiting in enumerate(self._pending, start=1):
                if waiting is job:
                    return index
        return None

    def find(self, job_id: str) -> Job | None:
        """The running or waiting job with this id, if any."""
        with self._condition:
            return next((job for job in (*self._running, *self._pending) if job.id == job_id), None)

    def waiting_ids(self) -> list[str]:
        """The ids of the waiting jobs, the next one to run first."""
        with self._condition:
            return [job.id for job in self._pending]

    def cancel(self, job_id: str, reason: str = "the job was cancelled before it ran") -> bool:
        """Take the waiting job `job_id` off the queue (its future fails with JobCancelled); False when not waiting."""
        with self._condition:
            job = next((job for job in self._pending if job.id == job_id), None)
            if job is None:
                return False
            self._pending.remove(job)
        job.future.set_exception(JobCancelled(reason))
        return True

    @property
    def paused(self) -> bool:
        """Whether the queue starts no new job (the running one finishes)."""
        return self._paused

    def pause(self) -> None:
        """Start no new job until `resume`; the running one goes on."""
        with self._condition:
            self._paused = True

    def resume(self) -> None:
        """Start waiting jobs again."""
        with self._condition:
            self._paused = False
            self._condition.notify_all()

    def interrupt(self) -> bool:
        """Interrupt the running job (of several, the first started; a task is interrupted by id); False when none."""
        job = self.current
        if job is None:
            return False
        job.interrupt()
        return True

    def skip(self) -> bool:
        """Skip the running job's current image (of several, the first started's); False when nothing runs."""
        job = self.current
        if job is None:
            return False
        job.skip()
        return True

    def _work(self) -> None:
        while True:
            with self._condition:
                while (self._paused or not self._pending) and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                self._running.append(job)
            try:
                if job.future.set_running_or_notify_cancel():
                    job.started_at = time.time()
                    try:
                        result = job.run(job)
                    except BaseException as exc:  # the error belongs to this job's request only
                        job.future.set_exception(exc)
                    else:
                        job.future.set_result(result)
            finally:
                job.finished_at = time.time()
                with self._condition:
                    self._running.remove(job)
                    if job.started_at is not None:
                        self._last_duration = job.finished_at - job.started_at


@dataclass(frozen=True)
class ClientQueue:
    """The job queue as one client submits to it: each job carries the client and waits within the limits.

    Every front end submits a client's work (generation, extras, model loads) through one, so
    the limits count the API's and the web UI's jobs alike.
    """

    queue: JobQueue
    client: str
    limits: QueueLimits

    def submit(self, kind: str, run: Callable[[Job], Any], job_id: str | None = None) -> Job:
        """Queue `run(job)` for this client; QueueFull/ClientQueueFull when over the limits."""
        return self.queue.submit(kind, run, job_id=job_id, client=self.client, limits=self.limits)


class JobSubmitter(Protocol):
    """What takes jobs: the queue itself, or a front end's view of it that adds its client and limits."""

    def submit(self, kind: str, run: Callable[[Job], Any], job_id: str | None = None) -> Job: ...


def submit_generation(queue: JobSubmitter, kind: str, work: Callable[[Any], Any], job_id: str | None = None) -> Job:
    """Queue `work(control)`, its GenerationControl wired to the job's stop flags and progress record.

    The one way front ends (API, web UI) put engine work on the queue, so progress, interrupt
    and skip behave the same whoever submitted the job.
    """
    from sdstudio.engine.service import GenerationControl

    def run(job: Job) -> Any:
        def on_progress(event: ProgressEvent) -> None:
            p = job.progress
            p.job_no, p.job_count = event.job_no, event.job_count
            p.sampling_step, p.sampling_steps = event.step, event.steps
            p.textinfo = event.textinfo or None
            if event.preview is not None:
                p.preview, p.preview_id = event.preview, p.preview_id + 1

        control = GenerationControl(cancel=job.cancel, on_progress=on_progress, task_id=job.id)
        return work(control)

    return queue.submit(kind, run, job_id=job_id)


def submit_merge(queue: JobSubmitter, merger: CheckpointMerger, request: MergeRequest) -> Job:
    """Queue a checkpoint merge: its progress on the job's record, stopped (nothing saved) by an interrupt.

    The API's merge-checkpoints and the web UI's Checkpoint Merger tab both merge through this.
    """
    return queue.submit(
        "merge-checkpoints",
        lambda job: merger.merge(request, progress=job.report, interrupted=lambda: job.cancel.interrupted),
    )
