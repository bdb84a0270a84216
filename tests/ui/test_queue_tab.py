"""The Queue tab's views and actions over a real task store and runner (the browser test covers the page)."""

from __future__ import annotations

from sdstudio.app import open_app
from sdstudio.engine.job_queue import JobQueue
from sdstudio.engine.task_store import TaskSource
from sdstudio.server.routes.tasks import TASK_KINDS
from sdstudio.server.tasks import TaskRunner
from sdstudio.ui.queue import PROMPT_SHOWN, act, queue_view


def test_the_tables_list_stored_tasks_and_cancel_says_why_it_cannot(data_dir):
    tasks = TaskRunner.open(open_app(data_dir), JobQueue(), TASK_KINDS)
    try:
        tasks.store.add("t1", "txt2img", {"prompt": "a long prompt " * 10}, "address 127.0.0.1")
        tasks.store.add("t2", "extras-single-image", {}, None)
        status, pending, running, history, images = queue_view(tasks, "")
        assert "2 task(s) waiting" in status and running == [] and history == [] and images == []
        assert [row[:4] for row in pending] == [
            ["t1", "txt2img", "api", "queued"],
            ["t2", "extras-single-image", "api", "queued"],
        ]
        assert len(pending[0][4]) == PROMPT_SHOWN and pending[0][4].endswith("…") and pending[1][4] == ""

        assert "Cancelled" in act(lambda: tasks.cancel("t1"), "Cancelled t1.")
        refused = act(lambda: tasks.cancel("t1"), "Cancelled t1.")
        assert "sdstudio-status-error" in refused and "cancelled already" in refused
        tasks.set_paused(True)
        status, pending, _, history, _ = queue_view(tasks, "t1")
        assert "Queue paused; 1 task(s) waiting" in status
        assert [row[:4] for row in history] == [["t1", "txt2img", "api", "cancelled"]] and history[0][7]

        tasks.store.add("u1", "txt2img", {"prompt": "from the page"}, "address 127.0.0.1", TaskSource.UI)
        tasks.store.cancel("u1")
        refused = act(lambda: tasks.requeue("u1"), "Queued u1 again.")
        assert "web UI job" in refused and "sdstudio-status-error" in refused
    finally:
        tasks.store.close()
