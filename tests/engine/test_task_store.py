"""The task store: tasks outlive the process (SQLite, WAL), move through their states, run again once after a crash."""

from __future__ import annotations

import sqlite3

import pytest

from sdstudio.engine.task_store import TaskFile, TaskSource, TaskState, TaskStore
from sdstudio.errors import Conflict, NotFound


@pytest.fixture
def store(tmp_path):
    opened = TaskStore(tmp_path / "tasks" / "tasks.sqlite3")
    yield opened
    opened.close()


def reopen(store: TaskStore) -> TaskStore:
    """The same database as a new process sees it after this one died."""
    return TaskStore(store.path)


def test_a_task_is_committed_in_wal_mode_before_add_returns(store):
    store.add("task(1)", "txt2img", {"prompt": "a cat", "seed": 5}, "address 127.0.0.1")
    assert store.journal_mode == "wal"
    other = sqlite3.connect(store.path)  # another process's view: only what was committed
    try:
        assert other.execute("SELECT id, kind, state, request FROM tasks").fetchall() == [
            ("task(1)", "txt2img", "queued", '{"prompt": "a cat", "seed": 5}')
        ]
    finally:
        other.close()


def test_a_task_goes_queued_running_done_with_its_files(store):
    store.add("t", "txt2img", {"seed": 1}, None)
    running = store.start("t")
    assert (running.state, running.attempts) == (TaskState.RUNNING, 1)
    assert running.started_at is not None and running.finished_at is None
    store.record_file("t", "/out/00001-1.png")
    assert store.get("t").written == ("/out/00001-1.png",)
    store.finish("t", TaskState.DONE, [TaskFile("/out/00001-1.png", "a cat\nSeed: 1")], {"seed": 1})
    done = store.get("t")
    assert done.state is TaskState.DONE and done.finished
    assert done.files == (TaskFile("/out/00001-1.png", "a cat\nSeed: 1"),)
    assert done.info == {"seed": 1} and done.written == ()
    with pytest.raises(Conflict, match="only a queued task can be cancelled"):
        store.cancel("t")
    with pytest.raises(Conflict, match="only a queued task can start"):
        store.start("t")


def test_cancel_requeue_and_the_order_tasks_run_in(store):
    for name in ("a", "b", "c"):
        store.add(name, "txt2img", {}, None)
    store.cancel("b")
    assert store.get("b").state is TaskState.CANCELLED
    with pytest.raises(Conflict, match="only a finished task"):
        store.requeue("a")
    again = store.requeue("b")
    assert (again.state, again.attempts, again.files) == (TaskState.QUEUED, 0, ())
    assert [task.id for task in store.queued()] == ["a", "c", "b"], "a requeued task goes to the end"
    assert [task.id for task in store.select([TaskState.QUEUED], limit=2)] == ["a", "b"]  # select: accepted order
    with pytest.raises(NotFound, match="no task with id 'nope'"):
        store.get("nope")


def test_an_id_in_use_is_refused_and_a_finished_one_replaced(store):
    store.add("same", "txt2img", {"seed": 1}, None)
    with pytest.raises(Conflict, match="force_task_id"):
        store.add("same", "txt2img", {"seed": 2}, None)
    store.start("same")
    store.finish("same", TaskState.FAILED, error="boom")
    replaced = store.add("same", "img2img", {"seed": 3}, None)
    assert replaced is not None and replaced.error == "boom"
    fresh = store.get("same")
    assert (fresh.kind, fresh.request, fresh.state) == ("img2img", {"seed": 3}, TaskState.QUEUED)
    assert fresh.seq != replaced.seq, "a replaced task's results folder is never reused"


def test_a_task_running_when_the_process_died_runs_again_once_then_fails(store):
    store.add("first", "txt2img", {}, None)
    store.add("second", "txt2img", {}, None)
    store.start("first")
    store.record_file("first", "/out/partial.png")
    store.close()  # the process dies here

    after_one_crash = reopen(store)
    queued = after_one_crash.recover(requeue_interrupted=True)
    assert [task.id for task in queued] == ["first", "second"], "the interrupted task keeps its place"
    first = after_one_crash.get("first")
    assert first.state is TaskState.QUEUED and "stopped while this task ran" in (first.error or "")
    assert first.written == ("/out/partial.png",), "the next attempt must know what the dead one wrote"
    assert after_one_crash.start("first").attempts == 2
    after_one_crash.close()  # and dies again

    after_two_crashes = reopen(store)
    assert [task.id for task in after_two_crashes.recover(requeue_interrupted=True)] == ["second"]
    failed = after_two_crashes.get("first")
    assert failed.state is TaskState.FAILED and "2 times" in (failed.error or "")
    after_two_crashes.close()


def test_without_requeue_a_task_the_process_left_running_stays_interrupted(store):
    store.add("t", "txt2img", {}, None)
    store.start("t")
    store.close()
    later = reopen(store)
    assert later.recover(requeue_interrupted=False) == []
    assert later.get("t").state is TaskState.INTERRUPTED
    later.close()


def test_clearing_history_removes_only_finished_tasks(store):
    for name in ("done", "queued", "cancelled"):
        store.add(name, "txt2img", {}, None)
    store.start("done")
    store.finish("done", TaskState.DONE)
    store.cancel("cancelled")
    assert sorted(task.id for task in store.clear_finished()) == ["cancelled", "done"]
    assert [task.id for task in store.select()] == ["queued"]


def test_a_pause_is_kept_for_the_next_process_until_resumed(store):
    assert store.paused is False
    store.set_paused(True)
    after_crash = reopen(store)
    try:
        assert after_crash.paused is True
        after_crash.set_paused(False)
        later = reopen(after_crash)
        assert later.paused is False
        later.close()
    finally:
        after_crash.close()


def test_web_ui_tasks_left_by_a_dead_process_are_interrupted_not_run_again(store):
    store.add("api", "txt2img", {"prompt": "a"}, None)
    store.add("page-running", "txt2img", {"prompt": "b"}, "address 127.0.0.1", TaskSource.UI)
    store.add("page-waiting", "txt2img", {"prompt": "c"}, "address 127.0.0.1", TaskSource.UI)
    store.start("page-running")
    later = reopen(store)
    try:
        assert [task.id for task in later.recover(requeue_interrupted=True)] == ["api"]
        for task_id in ("page-running", "page-waiting"):
            task = later.get(task_id)
            assert (task.state, task.source) == (TaskState.INTERRUPTED, TaskSource.UI) and "web UI" in task.error
        assert later.get("api").source is TaskSource.API
    finally:
        later.close()


def test_a_store_written_before_tasks_had_a_source_opens_with_its_tasks_from_the_api(tmp_path):
    path = tmp_path / "tasks.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE tasks (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, "
        "request TEXT NOT NULL, client TEXT, state TEXT NOT NULL, created_at REAL NOT NULL, queued_at REAL NOT NULL, "
        "started_at REAL, finished_at REAL, attempts INTEGER NOT NULL DEFAULT 0, files TEXT NOT NULL DEFAULT '[]', "
        "info TEXT, error TEXT, written TEXT NOT NULL DEFAULT '[]')"
    )
    old.execute(
        "INSERT INTO tasks (id, kind, request, state, created_at, queued_at) "
        "VALUES ('t', 'txt2img', '{}', 'queued', 1, 1)"
    )
    old.commit()
    old.close()
    store = TaskStore(path)
    try:
        assert [(task.id, task.source) for task in store.queued()] == [("t", TaskSource.API)]
    finally:
        store.close()
