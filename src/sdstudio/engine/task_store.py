"""The task store: every accepted API job as a row in SQLite, so no job is lost when the process dies.

A task is written (committed) before it is queued, moves queued -> running -> done / failed /
interrupted (or queued -> cancelled), and keeps its request, timestamps, attempts, result files
with their infotexts, and error text until history is cleared. The database is SQLite in WAL
mode with `synchronous=FULL`: a commit is on disk before the call returns, readers never wait
for the worker's writes, and a kill -9 at any moment leaves the last committed state.

While an attempt runs, every file it is about to write is recorded (`record_file`); a task whose
process died mid-run therefore knows exactly which partial outputs to remove before it runs
again, so a re-run after a crash never leaves the same image twice in the outputs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sdstudio.errors import Conflict, NotFound


class TaskState(StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """Stopped before the end: by an interrupt (what was made is kept), or by a server stop not run again."""
    CANCELLED = "cancelled"
    """Taken off the queue before it ran."""


FINISHED_STATES = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.INTERRUPTED, TaskState.CANCELLED})

RUNS_AFTER_A_CRASH = 1
"""How many times a task that was running when the process died is run again (then it fails)."""


class TaskSource(StrEnum):
    """Who queued a task."""

    API = "api"
    """A client of the HTTP API: its body is stored, so it can run again (after a restart, or requeued)."""
    UI = "ui"
    """The web UI's Generate: kept to be shown and for its results; not run again (the page that asked is gone)."""


@dataclass(frozen=True)
class TaskFile:
    """One result image on disk and its infotext."""

    path: str
    infotext: str | None = None


@dataclass(frozen=True)
class TaskRecord:
    """One stored task."""

    seq: int
    """Its row number: unique for the life of the store (never reused), so it names the task's result folder."""
    id: str
    kind: str
    request: dict[str, Any]
    client: str | None
    state: TaskState
    created_at: float
    queued_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    files: tuple[TaskFile, ...]
    info: dict[str, Any] | None
    error: str | None
    written: tuple[str, ...]
    """Files the current (or a dead) attempt has begun to write; emptied when the attempt finishes."""
    source: TaskSource = TaskSource.API

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    client TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    files TEXT NOT NULL DEFAULT '[]',
    info TEXT,
    error TEXT,
    written TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT 'api'
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, queued_at, seq);
CREATE TABLE IF NOT EXISTS queue_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_COLUMNS = (
    "seq, id, kind, request, client, state, created_at, queued_at, started_at, finished_at, "
    "attempts, files, info, error, written, source"
)


def _record(row: Sequence[Any]) -> TaskRecord:
    (seq, task_id, kind, request, client, state, created, queued, started, finished) = row[:10]
    attempts, files, info, error, written, source = row[10:]
    return TaskRecord(
        seq=seq,
        id=task_id,
        kind=kind,
        request=json.loads(request),
        client=client,
        state=TaskState(state),
        created_at=created,
        queued_at=queued,
        started_at=started,
        finished_at=finished,
        attempts=attempts,
        files=tuple(TaskFile(item["path"], item.get("infotext")) for item in json.loads(files)),
        info=json.loads(info) if info else None,
        error=error,
        written=tuple(json.loads(written)),
        source=TaskSource(source),
    )


class TaskStore:
    """The tasks of one data dir, in one SQLite file (WAL); safe to use from several threads."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection, its use serialised by a lock: the writes are few and small.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # committed = on disk: a task acknowledged is never lost
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
            if "source" not in columns:  # a store written before tasks had a source: all came from the API
                self._db.execute("ALTER TABLE tasks ADD COLUMN source TEXT NOT NULL DEFAULT 'api'")

    def close(self) -> None:
        """Close the database (the store cannot be used after)."""
        with self._lock:
            self._db.close()

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode of the open database ("wal")."""
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _get(self, db: sqlite3.Connection, task_id: str) -> TaskRecord | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return _record(row) if row else None

    def _must_get(self, db: sqlite3.Connection, task_id: str) -> TaskRecord:
        record = self._get(db, task_id)
        if record is None:
            raise NotFound(f"no task with id {task_id!r}")
        return record

    # Reading

    def get(self, task_id: str) -> TaskRecord:
        """The task `task_id`; NotFound when the store has none."""
        with self._lock:
            return self._must_get(self._db, task_id)

    def find(self, task_id: str) -> TaskRecord | None:
        """The task `task_id`, or None."""
        with self._lock:
            return self._get(self._db, task_id)

    def select(self, states: Iterable[TaskState] = (), limit: int | None = None) -> list[TaskRecord]:
        """Tasks in the order they were accepted, only those in `states` when given, the first `limit`."""
        query = f"SELECT {_COLUMNS} FROM tasks"
        params: list[Any] = []
        wanted = [str(state) for state in states]
        if wanted:
            query += f" WHERE state IN ({', '.join('?' * len(wanted))})"
            params += wanted
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        with self._lock:
            return [_record(row) for row in self._db.execute(query, params)]

    def queued(self) -> list[TaskRecord]:
        """The queued tasks in the order they run."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE state = ? ORDER BY queued_at, seq", (TaskState.QUEUED,)
            )
            return [_record(row) for row in rows]

    @property
    def paused(self) -> bool:
        """Whether the queue was paused (and not resumed since), in this process or a previous one."""
        with self._lock:
            row = self._db.execute("SELECT value FROM queue_state WHERE name = 'paused'").fetchone()
        return row is not None and json.loads(row[0]) is True

    # Changes

    def set_paused(self, paused: bool) -> None:
        """Remember whether the queue is paused (committed on return), so a restart keeps it so."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO queue_state (name, value) VALUES ('paused', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (json.dumps(paused),),
            )

    def _transition(
        self, task_id: str, allowed: Collection[TaskState], refusal: str, assignments: str, *values: Any
    ) -> TaskRecord:
        """Apply `assignments` (SQL `SET` text, over `values`) to a task in an `allowed` state, else Conflict."""
        with self._transaction() as db:
            record = self._must_get(db, task_id)
            if record.state not in allowed:
                raise Conflict(f"task {task_id!r} is {record.state}; {refusal}")
            db.execute(f"UPDATE tasks SET {assignments} WHERE seq = ?", (*values, record.seq))
            return self._must_get(db, task_id)

    def add(
        self,
        task_id: str,
        kind: str,
        request: dict[str, Any],
        client: str | None,
        source: TaskSource = TaskSource.API,
    ) -> TaskRecord | None:
        """Write a new queued task (committed on return); returns the finished task of that id it replaces, if any.

        An id a queued or running task has is refused (Conflict): the client reused `force_task_id`.
        """
        now = time.time()
        with self._transaction() as db:
            old = self._get(db, task_id)
            if old is not None and not old.finished:
                raise Conflict(f"force_task_id: task {task_id!r} is {old.state}; give each task its own id")
            if old is not None:
                db.execute("DELETE FROM tasks WHERE seq = ?", (old.seq,))
            db.execute(
                "INSERT INTO tasks (id, kind, request, client, state, created_at, queued_at, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, kind, json.dumps(request), client, TaskState.QUEUED, now, now, source),
            )
        return old

    def delete(self, task_id: str) -> None:
        """Remove a task whatever its state (one the queue refused after it was written)."""
        with self._transaction() as db:
            db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))

    def start(self, task_id: str) -> TaskRecord:
        """Mark a queued task running, one more attempt; the files a dead attempt wrote are forgotten here.

        The caller removes `written` of the record it read before, so the partial outputs of an
        attempt that died go before the new attempt writes its own.
        """
        return self._transition(
            task_id,
            {TaskState.QUEUED},
            "only a queued task can start",
            "state = ?, started_at = ?, finished_at = NULL, attempts = attempts + 1, written = '[]'",
            TaskState.RUNNING,
            time.time(),
        )

    def record_file(self, task_id: str, path: str) -> None:
        """Note a file the running attempt is about to write (committed before it is written)."""
        with self._transaction() as db:
            db.execute("UPDATE tasks SET written = json_insert(written, '$[#]', ?) WHERE id = ?", (path, task_id))

    def finish(
        self,
        task_id: str,
        state: TaskState,
        files: Sequence[TaskFile] = (),
        info: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """End the running attempt in a finished state with its result files, info and error text."""
        if state not in FINISHED_STATES:
            raise ValueError(f"{state} is not a finished state")
        files_json = json.dumps([{"path": f.path, "infotext": f.infotext} for f in files])
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET state = ?, finished_at = ?, files = ?, info = ?, error = ?, written = '[]' "
                "WHERE id = ?",
                (state, time.time(), files_json, json.dumps(info) if info is not None else None, error, task_id),
            )

    def cancel(self, task_id: str) -> None:
        """Mark a queued task cancelled; Conflict when it is not queued."""
        self._transition(
            task_id,
            {TaskState.QUEUED},
            "only a queued task can be cancelled",
            "state = ?, finished_at = ?",
            TaskState.CANCELLED,
            time.time(),
        )

    def requeue(self, task_id: str) -> TaskRecord:
        """Queue a finished task again, at the end of the queue, as a fresh task (its results are forgotten)."""
        return self._transition(
            task_id,
            FINISHED_STATES,
            "only a finished task can be queued again",
            "state = ?, queued_at = ?, started_at = NULL, finished_at = NULL, attempts = 0, "
            "files = '[]', info = NULL, error = NULL, written = '[]'",
            TaskState.QUEUED,
            time.time(),
        )

    def recover(self, requeue_interrupted: bool) -> list[TaskRecord]:
        """At start: settle the tasks a dead process left running; returns the queued tasks in the order they run.

        A running task is marked interrupted; with `requeue_interrupted` it is queued again (first
        in line, where it was) unless it has already been run again after a crash, then it fails.
        Its `written` files stay recorded until its next attempt starts and removes them. A web UI
        task, queued or running, is interrupted: the page that waited for it is gone.
        """
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET state = ?, error = ?, finished_at = ? WHERE source = ? AND state IN (?, ?)",
                (
                    TaskState.INTERRUPTED,
                    "the server stopped before this web UI job finished",
                    time.time(),
                    TaskSource.UI,
                    TaskState.QUEUED,
                    TaskState.RUNNING,
                ),
            )
            rows = db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE state = ?", (TaskState.RUNNING,))
            for record in [_record(row) for row in rows]:
                if not requeue_interrupted:
                    state, error = TaskState.INTERRUPTED, "the server stopped while this task ran"
                elif record.attempts > RUNS_AFTER_A_CRASH:
                    state, error = (
                        TaskState.FAILED,
                        (f"the server stopped while this task ran, {record.attempts} times; it is not run again"),
                    )
                else:
                    state, error = TaskState.QUEUED, "the server stopped while this task ran; it runs again"
                finished = time.time() if state in FINISHED_STATES else None
                db.execute(
                    "UPDATE tasks SET state = ?, error = ?, finished_at = ? WHERE seq = ?",
                    (state, error, finished, record.seq),
                )
        return self.queued()

    def clear_finished(self) -> list[TaskRecord]:
        """Remove every finished task (the history); returns what was removed."""
        with self._transaction() as db:
            states = [str(state) for state in FINISHED_STATES]
            marks = ", ".join("?" * len(states))
            removed = [
                _record(row) for row in db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE state IN ({marks})", states)
            ]
            db.execute(f"DELETE FROM tasks WHERE state IN ({marks})", states)
        return removed
