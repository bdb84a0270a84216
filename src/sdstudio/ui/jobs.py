"""UI work goes through the engine's job queue, the same line the API's requests wait in.

Tabs queue generation with the engine's `submit_generation` (progress and the cancel token
wired in) and other device work with `JobQueue.submit`, each through `client_queue`: the
page's user counts against the queue limits as an API client does. `follow_job` yields progress
snapshots while the job waits or runs, so a Gradio generator can redraw the progress bar
and the live preview, then returns when the job's future is done.
"""

from __future__ import annotations

import concurrent.futures
import html
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sdstudio.config import Settings
from sdstudio.engine.job_queue import ClientQueue, JobQueue, QueueLimits

POLL_SECONDS = 0.4


def page_client(request: Any) -> str:
    """Who a page's job is for, named as the API names clients: the logged-in user (--auth), else the address.

    `request` is the event's gr.Request; the browser session stands in when it has neither.
    """
    username = getattr(request, "username", None)
    if username:
        return f"user {username}"
    host = getattr(getattr(request, "client", None), "host", None)
    if host:
        return f"address {host}"
    return f"session {getattr(request, 'session_hash', None) or 'unknown'}"


def client_queue(queue: JobQueue, request: Any, settings: Settings) -> ClientQueue:
    """The shared queue as this page's client submits to it, within limit_queued_jobs and its per-client share."""
    return ClientQueue(queue, page_client(request), QueueLimits.from_settings(settings))


@dataclass
class ProgressSnapshot:
    """What the progress bar shows at one moment."""

    position: int | None  # 0 running, N waiting behind N-1 others, None finished
    fraction: float
    eta_seconds: float | None
    step: int
    steps: int
    job_no: int
    job_count: int
    preview: Any = None  # a PIL image when a new preview arrived since the last snapshot
    interrupting: bool = False

    def html(self) -> str:
        """The progress bar as HTML (A1111's bar with ETA, sdstudio's queue position)."""
        return progress_html(self)


def snapshot(queue, job, last_preview_id: int = 0) -> tuple[ProgressSnapshot, int]:
    """The job's progress now, and the id of the preview it carries."""
    position = queue.position(job) if hasattr(queue, "position") else (0 if queue.current is job else None)
    p = job.progress
    fraction = job.fraction_done()
    eta = None
    if job.started_at and fraction > 0.01:
        elapsed = time.time() - job.started_at
        eta = max(0.0, elapsed / fraction - elapsed)
    preview = None
    if p.preview is not None and p.preview_id != last_preview_id:
        preview, last_preview_id = p.preview, p.preview_id
    snap = ProgressSnapshot(
        position=position,
        fraction=fraction,
        eta_seconds=eta,
        step=p.sampling_step,
        steps=p.sampling_steps,
        job_no=p.job_no,
        job_count=p.job_count,
        preview=preview,
        interrupting=job.cancel.interrupted,
    )
    return snap, last_preview_id


def follow_job(queue, job, poll: float = POLL_SECONDS) -> Iterator[ProgressSnapshot]:
    """Yield a snapshot every `poll` seconds until the job's future is done."""
    last_preview = 0
    while True:
        done, _ = concurrent.futures.wait([job.future], timeout=poll)
        if done:
            return
        snap, last_preview = snapshot(queue, job, last_preview)
        yield snap


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def progress_html(snap: ProgressSnapshot) -> str:
    """A bar with percentage, step, image number and ETA; or the queue position while waiting."""
    if snap.position is not None and snap.position > 0:
        label = f"Waiting in queue: {snap.position - 1} job(s) ahead"
        percent = 0
    elif snap.steps == 0 and snap.fraction == 0:
        label = "Starting (loading the model on first use)…"
        percent = 0
    else:
        percent = int(snap.fraction * 100)
        parts = [f"{percent}%"]
        if snap.steps:
            parts.append(f"step {snap.step}/{snap.steps}")
        if snap.job_count > 1:
            parts.append(f"image batch {min(snap.job_no + 1, snap.job_count)}/{snap.job_count}")
        if snap.eta_seconds is not None:
            parts.append(f"ETA {_format_seconds(snap.eta_seconds)}")
        if snap.interrupting:
            parts.append("interrupting…")
        label = " · ".join(parts)
    return (
        f'<div class="sdstudio-progress" role="progressbar" aria-valuenow="{percent}">'
        f'<div class="sdstudio-progress-fill" style="width:{percent}%"></div>'
        f'<span class="sdstudio-progress-text">{html.escape(label)}</span></div>'
    )


def status_html(message: str, kind: str = "info") -> str:
    """A one-line status under the gallery (done, interrupted, error)."""
    return f'<div class="sdstudio-status sdstudio-status-{kind}">{html.escape(message)}</div>'
