"""The Queue tab: the stored tasks (pending, running, history) with a finished task's images, and the queue's controls.

It reads the task store the API writes (`DATA_DIR/tasks`), so it shows what clients queued even
across restarts; cancel, requeue, pause/resume and clear history go through the same task runner
as the API's /sdapi/v1/tasks routes. Nothing refreshes by itself: the page asks (Refresh, opening
the tab, or after an action), as a table that redraws every second would fight the user's selection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gradio as gr
from PIL import Image

from sdstudio.engine.job_queue import ClientQueue, Job, JobQueue
from sdstudio.engine.task_store import FINISHED_STATES, TaskRecord, TaskState, TaskStore
from sdstudio.errors import SdStudioError
from sdstudio.ui.jobs import status_html

COLUMNS = ["ID", "Kind", "Source", "State", "Prompt", "Queued", "Started", "Finished"]
PROMPT_SHOWN = 60
"""Characters of the prompt a row shows."""
HISTORY_ROWS = 200
"""Finished tasks the history table shows, newest first."""
THUMBNAILS_SHOWN = 64
THUMBNAIL_SIZE = 256


class QueueTasks(Protocol):
    """What the tab needs of the server's task runner (server.tasks.TaskRunner)."""

    store: TaskStore
    queue: JobQueue

    def cancel(self, task_id: str) -> Any: ...

    def requeue(self, task_id: str) -> Any: ...

    def clear_history(self) -> int: ...

    def set_paused(self, paused: bool) -> None: ...

    def submit_ui(
        self, kind: str, request: dict[str, Any], work: Callable[[Any], Any], submitter: ClientQueue
    ) -> Job: ...


@dataclass
class QueueTab:
    """The tab's components; `refresh` is the event that redraws them (opening the tab runs it)."""

    pending: Any
    running: Any
    history: Any
    selected: Any
    gallery: Any
    status: Any
    result: Any
    refresh: Callable[[str], list[Any]]

    @property
    def outputs(self) -> list[Any]:
        return [self.status, self.pending, self.running, self.history, self.gallery]


def clock(seconds: float | None) -> str:
    """A stored time as the server's local date and time ("" when not yet)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""


def task_row(record: TaskRecord) -> list[str]:
    """One table row: id, kind, source (api or ui), state, the prompt's start, and its times."""
    prompt = str(record.request.get("prompt") or "")
    if len(prompt) > PROMPT_SHOWN:
        prompt = prompt[: PROMPT_SHOWN - 1] + "…"
    times = (clock(record.queued_at), clock(record.started_at), clock(record.finished_at))
    return [record.id, record.kind, str(record.source), str(record.state), prompt, *times]


def table_rows(records: list[TaskRecord]) -> list[list[str]]:
    """The rows of a table of tasks."""
    return [task_row(record) for record in records]


def shown_images(store: TaskStore, selected: str, newest: Sequence[TaskRecord] = ()) -> list[tuple[Any, str]]:
    """(thumbnail, caption) of the selected task's images on disk; none selected: the first of `newest` with images.

    Thumbnails, not paths: Gradio serves only files under its own folders, and a data dir is elsewhere.
    """
    record = store.find(selected.strip()) if selected.strip() else next((task for task in newest if task.files), None)
    if record is None:
        return []
    shown = []
    for index, file in enumerate(record.files[:THUMBNAILS_SHOWN]):
        thumbnail = read_thumbnail(Path(file.path))
        if thumbnail is not None:
            shown.append((thumbnail, f"{record.id} #{index}"))
    return shown


def read_thumbnail(path: Path) -> Image.Image | None:
    """A small copy of the image at `path`; None when it is gone or unreadable (the user moved it...)."""
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            return image.convert("RGB")
    except (OSError, ValueError):
        return None


def queue_status(tasks: QueueTasks, waiting: int) -> str:
    """The line above the tables: whether the queue runs or is paused, and how many tasks wait."""
    state = "paused" if tasks.queue.paused else "running"
    return status_html(f"Queue {state}; {waiting} task(s) waiting.", "warning" if tasks.queue.paused else "info")


def queue_view(tasks: QueueTasks, selected: str) -> list[Any]:
    """Values for QueueTab.outputs: the status line, the three tables and the images."""
    store = tasks.store
    pending = store.queued()
    running = store.select([TaskState.RUNNING])
    finished = store.select(FINISHED_STATES)
    history = sorted(finished, key=lambda record: record.finished_at or 0, reverse=True)[:HISTORY_ROWS]
    return [
        queue_status(tasks, len(pending)),
        table_rows(pending),
        table_rows(running),
        table_rows(history),
        shown_images(store, selected, history),
    ]


def act(action: Callable[[], Any], done: str) -> str:
    """Run one action; its result line, or what was wrong (a finished task cannot be cancelled...)."""
    try:
        action()
    except SdStudioError as exc:
        return status_html(str(exc), "error")
    return status_html(done)


def selected_id(selected: str) -> str:
    """The task id typed or picked in the Selected task box; an error when it is empty."""
    task_id = selected.strip()
    if not task_id:
        raise SdStudioError("select a task in a table first (or type its id)")
    return task_id


def build_queue_tab(tasks: QueueTasks) -> QueueTab:
    """Build the tab (inside an open gr.Tab) and wire its buttons."""
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="queue_refresh", size="sm", scale=0, min_width=90)
        pause = gr.Button("Pause queue", elem_id="queue_pause", size="sm", scale=0, min_width=120)
        resume = gr.Button("Resume queue", elem_id="queue_resume", size="sm", scale=0, min_width=120)
        clear = gr.Button("Clear history", elem_id="queue_clear", variant="stop", size="sm", scale=0, min_width=120)
    status = gr.HTML("", elem_id="queue_status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            running = gr.Dataframe(
                headers=COLUMNS, datatype="str", interactive=False, label="Running", elem_id="queue_running"
            )
            pending = gr.Dataframe(
                headers=COLUMNS, datatype="str", interactive=False, label="Pending", elem_id="queue_pending"
            )
            history = gr.Dataframe(
                headers=COLUMNS, datatype="str", interactive=False, label="History", elem_id="queue_history"
            )
        with gr.Column(scale=2):
            with gr.Row():
                selected = gr.Textbox(label="Selected task", elem_id="queue_selected", scale=3)
                cancel = gr.Button("Cancel selected", elem_id="queue_cancel", size="sm", scale=1)
                requeue = gr.Button("Requeue selected", elem_id="queue_requeue", size="sm", scale=1)
            result = gr.HTML("", elem_id="queue_result")
            gallery = gr.Gallery(
                label="Task images", columns=4, height=360, object_fit="contain", elem_id="queue_gallery"
            )

    def redraw(selected_task: str) -> list[Any]:
        return queue_view(tasks, selected_task or "")

    tab = QueueTab(pending, running, history, selected, gallery, status, result, redraw)
    outputs = [result, *tab.outputs]

    def with_view(action: Callable[[str], str]) -> Callable[[str], list[Any]]:
        def run(selected_task: str) -> list[Any]:
            return [action(selected_task or ""), *redraw(selected_task)]

        return run

    def on_cancel(task_id: str) -> str:
        return act(lambda: tasks.cancel(selected_id(task_id)), f"Cancelled {task_id.strip()}.")

    def on_requeue(task_id: str) -> str:
        return act(lambda: tasks.requeue(selected_id(task_id)), f"Queued {task_id.strip()} again.")

    def on_pause(_task_id: str) -> str:
        return act(lambda: tasks.set_paused(True), "Queue paused: the running task finishes, no other starts.")

    def on_resume(_task_id: str) -> str:
        return act(lambda: tasks.set_paused(False), "Queue resumed.")

    def on_clear(_task_id: str) -> str:
        return status_html(f"History cleared: {tasks.clear_history()} task(s) removed.")

    private: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
    refresh.click(redraw, inputs=selected, outputs=tab.outputs, **private)
    buttons = ((cancel, on_cancel), (requeue, on_requeue), (pause, on_pause), (resume, on_resume), (clear, on_clear))
    for button, action in buttons:
        button.click(with_view(action), inputs=selected, outputs=outputs, **private)

    def on_row(evt: gr.SelectData) -> tuple[str, list[tuple[Any, str]]]:
        row = evt.row_value or []
        task_id = str(row[0]) if row else ""
        return task_id, shown_images(tasks.store, task_id) if task_id else []

    for table in (pending, running, history):
        table.select(on_row, outputs=[selected, gallery], **private)
    return tab
