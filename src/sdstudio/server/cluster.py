"""`sdstudio serve --cluster`: the API on this machine, the generation on Ray Serve replicas.

The ingress is the usual server (same routes, same task store in this data dir, same job
queue); only its engine differs. `ClusterEngine` is the App's `engine` there: every txt2img
and img2img job the routes or the web UI run goes to the `GenerationWorker` deployment, N
replicas anywhere in the Ray cluster, each with its own App over the same data dir path (its
own model cache, LoRAs, scripts). The job queue gets one worker thread per replica, so N jobs
run at once and the rest wait in the ingress's queue, in order.

Routing: each request carries its checkpoint as Serve's multiplexed model id (the job's
`override_settings.sd_model_checkpoint`, else the ingress's current checkpoint), so Serve
prefers a replica that has that checkpoint loaded.

Progress, interrupt and skip: the named `TaskBoard` actor holds, per task id, the progress a
replica reports at every step and the interrupt/skip flags; the replica reads the flags with
each report. The ingress thread that waits for a job copies the job's flags to the board and
the board's progress to the job, so /progress, /interrupt, /skip, /internal/progress and the
task API act on the right task wherever it runs.

Faults: when the replica running a job dies (its process killed, its node lost), the job is
sent once more, to another replica; an error of the request itself (a bad argument) is the
request's only, as on one machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import ray
from ray import serve
from ray.exceptions import RayActorError, RayTaskError

from sdstudio.config import Settings
from sdstudio.engine.request import GenerationResult, Img2ImgRequest, Txt2ImgRequest
from sdstudio.engine.scripting import ScriptSelection
from sdstudio.engine.service import GenerationControl, GenerationService
from sdstudio.errors import Unavailable

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle, DeploymentResponse

    from sdstudio.app import App
    from sdstudio.engine.job_context import ProgressEvent

log = logging.getLogger("sdstudio.server.cluster")

NAMESPACE = "sdstudio"
"""The Ray namespace of the task board (Serve keeps its own actors in "serve")."""
BOARD_NAME = "sdstudio-task-board"
SERVE_APP_NAME = "sdstudio"
DEFAULT_CHECKPOINT_ID = "(default checkpoint)"
"""The multiplexed id of "the replica's settings' checkpoint": Serve refuses an empty id."""
CHECKPOINTS_PER_REPLICA = 1
"""What a replica tells Serve it keeps loaded (A1111's sd_checkpoints_limit default); ModelMemory does the keeping."""
ATTEMPTS = 2
"""A job whose replica dies is run once more."""
POLL_SECONDS = 0.1
"""How often the waiting ingress thread passes flags and progress between its job and the board."""


@dataclass(frozen=True)
class WorkerInfo:
    """Where a task runs: the replica's process and Ray node."""

    pid: int
    node_id: str


@dataclass
class BoardEntry:
    """One running task on the board."""

    interrupt: bool = False
    skip: bool = False
    progress: ProgressEvent | None = None
    worker: WorkerInfo | None = None


class TaskBoard:
    """The cluster's one record of running tasks (a named Ray actor): progress in, interrupt and skip out."""

    def __init__(self) -> None:
        self.entries: dict[str, BoardEntry] = {}

    def open(self, task_id: str) -> None:
        """An attempt at the task starts: no progress yet; an interrupt given before stays."""
        entry = self.entries.setdefault(task_id, BoardEntry())
        entry.skip, entry.progress, entry.worker = False, None, None

    def report(self, task_id: str, progress: ProgressEvent | None, worker: WorkerInfo) -> tuple[bool, bool]:
        """A replica's step: keep its progress; returns (interrupted, skip) for it, a skip given once."""
        entry = self.entries.get(task_id)
        if entry is None:
            return False, False
        if progress is not None:
            entry.progress = progress
        entry.worker = worker
        skip, entry.skip = entry.skip, False
        return entry.interrupt, skip

    def signal(self, task_id: str, interrupt: bool, skip: bool) -> ProgressEvent | None:
        """The ingress's side: pass on an interrupt or skip; returns the latest progress."""
        entry = self.entries.get(task_id)
        if entry is None:
            return None
        entry.interrupt = entry.interrupt or interrupt
        entry.skip = entry.skip or skip
        return entry.progress

    def worker(self, task_id: str) -> WorkerInfo | None:
        """The replica that last reported for the task."""
        entry = self.entries.get(task_id)
        return entry.worker if entry else None

    def close(self, task_id: str) -> None:
        """The task is finished (or failed): forget it."""
        self.entries.pop(task_id, None)


@dataclass(frozen=True)
class RemoteJob:
    """What the ingress sends a replica: the checked request and scripts, and the task id to report under."""

    kind: str
    request: Txt2ImgRequest | Img2ImgRequest
    scripts: ScriptSelection | None
    task_id: str
    settings: dict[str, Any]
    """The ingress's saved options (those of the machine left out): a replica works under the options a client
    set with POST /options, wherever it runs."""


MACHINE_SETTINGS = frozenset(
    {"device", "precision", "cpu_offload", "model_memory_budget_mb", "cluster_min_replicas", "cluster_max_replicas"}
)
"""Options about the machine that runs a replica, which each keeps as its own; the checkpoint goes by routing."""


def shared_settings(saved: Settings) -> dict[str, Any]:
    """The saved options a replica takes from the ingress: all but the machine's (a change back to a default too)."""
    return {
        name: value
        for name, value in saved.model_dump().items()
        if name not in MACHINE_SETTINGS and name != "sd_model_checkpoint"
    }


class GenerationWorker:
    """One Serve replica: its own App over the data dir, running one job at a time for the ingress."""

    def __init__(self, data_dir: str, run_options: dict[str, Any]) -> None:
        from sdstudio.app import open_app

        self.app = open_app(data_dir, run_options)
        self.board = ray.get_actor(BOARD_NAME, namespace=NAMESPACE)
        self.info = WorkerInfo(os.getpid(), ray.get_runtime_context().get_node_id())

    @serve.multiplexed(max_num_models_per_replica=CHECKPOINTS_PER_REPLICA)
    async def load_checkpoint(self, checkpoint_id: str) -> str:
        """Load the checkpoint into this replica's model cache (Serve then routes its jobs here first)."""
        name = "" if checkpoint_id == DEFAULT_CHECKPOINT_ID else checkpoint_id
        await asyncio.to_thread(self.app.checkpoints, name or None, self.app.settings_store.current)
        return name

    async def generate(self, job: RemoteJob) -> GenerationResult:
        """Run one job on this replica's engine, reporting to the board at every step."""
        checkpoint = await self.load_checkpoint(serve.get_multiplexed_model_id())
        return await asyncio.to_thread(self.run, job, checkpoint)

    def run(self, job: RemoteJob, checkpoint: str) -> GenerationResult:
        """The job on the engine (a worker thread): the board's flags become the job's cancel token."""
        control = GenerationControl(task_id=job.task_id)

        def exchange(event: ProgressEvent | None) -> None:
            interrupted, skip = cast(
                "tuple[bool, bool]", ray.get(self.board.report.remote(job.task_id, event, self.info))
            )
            if interrupted:
                control.interrupt()
            if skip:
                control.skip()

        control.on_progress = exchange
        exchange(None)  # an interrupt that came while the job waited
        saved = self.app.settings_store.saved.model_dump()
        changed = {name: value for name, value in job.settings.items() if saved.get(name) != value}
        if changed:  # the ingress's options changed since this replica last ran a job
            self.app.settings_store.change(changed)
        self.app.engine.select_model(model=checkpoint or None)
        run = self.app.engine.img2img if isinstance(job.request, Img2ImgRequest) else self.app.engine.txt2img
        return run(job.request, control, job.scripts)  # type: ignore[arg-type]


@dataclass
class ClusterWorkers:
    """The ingress's view of the deployment: send a job, follow it, send it again when its replica dies."""

    handle: DeploymentHandle
    board: Any  # the TaskBoard actor's handle
    replicas: int
    """How many jobs may run at once (the most replicas); the job queue gets as many threads."""

    def run(self, job: RemoteJob, checkpoint: str, control: GenerationControl) -> GenerationResult:
        """The job's result from a replica; at most ATTEMPTS replicas are tried when they die under it."""
        try:
            for attempt in range(1, ATTEMPTS + 1):
                ray.get(self.board.open.remote(job.task_id))
                routed = self.handle.options(multiplexed_model_id=checkpoint or DEFAULT_CHECKPOINT_ID)
                try:
                    response = cast("DeploymentResponse[GenerationResult]", routed.generate.remote(job))
                    return self.follow(response, job.task_id, control)
                except RayActorError as exc:
                    if attempt == ATTEMPTS:
                        raise Unavailable(
                            f"task {job.task_id}: the worker running it stopped {ATTEMPTS} times; "
                            "check the cluster (ray status) and send it again"
                        ) from exc
                    log.warning("task %s: its replica died (%s); running it again on another", job.task_id, exc)
                except RayTaskError as exc:  # the job's own error, raised on the replica: the request's answer
                    cause = exc.cause
                    raise (cause if isinstance(cause, Exception) else exc) from None
            raise AssertionError("unreachable")
        finally:
            self.board.close.remote(job.task_id)

    def follow(
        self, response: DeploymentResponse[GenerationResult], task_id: str, control: GenerationControl
    ) -> GenerationResult:
        """Wait for the replica's answer, passing the job's interrupt/skip to the board and its progress back."""
        interrupt_sent = False
        while True:
            try:
                return response.result(timeout_s=POLL_SECONDS)
            except TimeoutError:  # still running: the flags and progress, then wait on
                pass
            interrupt = control.cancel.interrupted and not interrupt_sent
            skip = control.cancel.skipped
            if skip:
                control.cancel.clear_skip()  # passed on; a later /skip is a new one
            event = ray.get(self.board.signal.remote(task_id, interrupt, skip))
            interrupt_sent = interrupt_sent or interrupt
            if event is not None and control.on_progress is not None:
                control.on_progress(event)

    def worker_of(self, task_id: str) -> WorkerInfo | None:
        """The replica running the task now (None when it has not reported yet)."""
        return ray.get(self.board.worker.remote(task_id))

    def close(self) -> None:
        """Remove the deployment and the board; the Ray cluster itself stays (it may serve others)."""
        serve.delete(SERVE_APP_NAME)
        ray.kill(self.board)


class ClusterEngine(GenerationService):
    """The ingress's engine: the local service's checks and names, its jobs run by the replicas."""

    def __init__(self, local: GenerationService, workers: ClusterWorkers) -> None:
        # The same settings, model names and checks as the local service; only where jobs run differs.
        self.__dict__.update(vars(local))
        self.workers = workers

    def _run(
        self,
        request: Txt2ImgRequest | Img2ImgRequest,
        kind: str,
        control: GenerationControl | None,
        selection: ScriptSelection | None,
    ) -> GenerationResult:
        control = control or GenerationControl()
        self.check_request_checkpoints(request)
        checkpoint = self.checkpoint_for(request.override_settings) or self.settings_store.current.sd_model_checkpoint
        task_id = control.task_id or f"job({uuid.uuid4().hex[:15]})"  # work not from the queue (a CLI run)
        job = RemoteJob(kind, request, selection, task_id, shared_settings(self.settings_store.saved))
        return self.workers.run(job, checkpoint or "", control)


def start_cluster(app: App, address: str | None, replicas: int | None) -> ClusterWorkers:
    """Join the Ray cluster at `address` (None: RAY_ADDRESS, a cluster `ray start` made here, else a new local one)
    and deploy the generation workers: `replicas` of them, or autoscaled between the cluster_*_replicas settings.
    """
    if not ray.is_initialized():
        ray.init(address=address or None, namespace=NAMESPACE, include_dashboard=False)
    serve.start(proxy_location="Disabled")  # the ingress is sdstudio's own server
    board = (
        ray.remote(TaskBoard).options(name=BOARD_NAME, namespace=NAMESPACE, get_if_exists=True, num_cpus=0).remote()  # type: ignore[attr-defined]
    )
    settings = app.settings_store.current
    has_gpus = ray.cluster_resources().get("GPU", 0) >= 1
    options = deployment_options(settings, replicas, has_gpus)
    deployment = serve.deployment(name="GenerationWorker", **options)(GenerationWorker)
    bound = deployment.bind(str(app.paths.root), app.settings_store.run_overlay)
    handle = serve.run(bound, name=SERVE_APP_NAME, route_prefix=None)
    most = replicas or options["autoscaling_config"]["max_replicas"]
    log.info("cluster: %s generation worker(s) deployed", replicas or f"{settings.cluster_min_replicas}-{most}")
    return ClusterWorkers(handle, board, most)


def deployment_options(settings: Settings, replicas: int | None, has_gpus: bool) -> dict[str, Any]:
    """The worker deployment's Serve options: `replicas` fixed, else autoscaled between the cluster_*_replicas
    settings; one job at a time each (the others wait in the ingress's queue); one GPU each where there are GPUs."""
    options: dict[str, Any] = {
        "max_ongoing_requests": 1,
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 1 if has_gpus else 0},
    }
    if replicas:
        options["num_replicas"] = replicas
    else:
        most = max(settings.cluster_min_replicas, settings.cluster_max_replicas)
        options["autoscaling_config"] = {
            "min_replicas": settings.cluster_min_replicas,
            "max_replicas": most,
            "target_ongoing_requests": 1,
        }
    return options


def cluster_app(app: App, workers: ClusterWorkers) -> App:
    """The same App, its engine running jobs on the cluster."""
    return replace(app, engine=ClusterEngine(app.engine, workers))
