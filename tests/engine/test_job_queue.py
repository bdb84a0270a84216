"""The job queue: arrival order, one at a time, failures contained, interrupt targets the running job."""

from __future__ import annotations

import threading
from concurrent.futures import wait

import pytest

from sdstudio.engine.job_queue import JobCancelled, JobQueue


@pytest.fixture
def queue():
    q = JobQueue()
    q.start()
    yield q
    q.stop()


def test_jobs_run_one_at_a_time_in_arrival_order(queue):
    order, running, overlap = [], [], []
    lock = threading.Lock()

    def make(n):
        def run(job):
            with lock:
                running.append(n)
                if len(running) > 1:
                    overlap.append(n)
            order.append(n)
            with lock:
                running.remove(n)
            return n * 10

        return run

    gate, started = threading.Event(), threading.Event()
    first = queue.submit("wait", lambda job: started.set() or gate.wait(5))
    assert started.wait(5)
    jobs = [queue.submit("t", make(n)) for n in range(20)]
    assert queue.position(jobs[0]) == 1 and queue.position(jobs[19]) == 20
    gate.set()
    assert first.future.result(5) is True
    assert [j.future.result(5) for j in jobs] == [n * 10 for n in range(20)]
    assert order == list(range(20))
    assert not overlap


def test_a_failing_job_answers_its_own_request_and_the_next_runs(queue):
    def boom(job):
        raise ValueError("bad input")

    bad = queue.submit("t", boom)
    good = queue.submit("t", lambda job: "fine")
    with pytest.raises(ValueError, match="bad input"):
        bad.future.result(5)
    assert good.future.result(5) == "fine"


def test_interrupt_acts_on_the_running_job_only(queue):
    started = threading.Event()

    def long_job(job):
        started.set()
        for step in range(1000):
            if job.cancel.wait_interrupted(0.01):
                return f"stopped at {step}"
        return "finished"

    running = queue.submit("t", long_job)
    waiting = queue.submit("t", lambda job: job.cancel.interrupted)
    assert started.wait(5)
    assert queue.interrupt()
    assert running.future.result(5).startswith("stopped at")
    assert waiting.future.result(5) is False
    assert not queue.interrupt(), "nothing runs now"


def test_stop_cancels_pending_jobs():
    q = JobQueue()
    pending = q.submit("t", lambda job: 1)
    q.stop()
    assert pending.future.cancelled()


def test_a_paused_queue_finishes_the_running_job_and_starts_no_other_until_resumed(queue):
    gate, started = threading.Event(), threading.Event()
    running = queue.submit("t", lambda job: started.set() or gate.wait(5))
    assert started.wait(5)
    queue.pause()
    waiting = queue.submit("t", lambda job: "ran")
    gate.set()
    assert running.future.result(5) is True
    done, _ = wait([waiting.future], timeout=0.5)
    assert not done and queue.position(waiting) == 1 and queue.paused
    queue.resume()
    assert waiting.future.result(5) == "ran"


def test_cancel_takes_a_waiting_job_off_the_queue_by_id(queue):
    gate, started = threading.Event(), threading.Event()
    running = queue.submit("t", lambda job: started.set() or gate.wait(5))
    assert started.wait(5)
    cancelled = queue.submit("t", lambda job: "ran", job_id="task(x)")
    after = queue.submit("t", lambda job: "after")
    assert queue.find("task(x)") is cancelled and queue.waiting_ids() == ["task(x)", after.id]
    assert queue.cancel("task(x)", "cancelled by the test")
    assert not queue.cancel("task(x)") and not queue.cancel(running.id), "only a waiting job can be cancelled"
    with pytest.raises(JobCancelled, match="cancelled by the test"):
        cancelled.future.result(5)
    gate.set()
    assert after.future.result(5) == "after"


def test_a_queue_with_two_workers_runs_two_jobs_at_once_and_the_rest_in_order():
    queue = JobQueue(workers=2)
    queue.start()
    try:
        gate, both = threading.Event(), threading.Barrier(3)
        first, second = (queue.submit("t", lambda job: both.wait(5) is not None and gate.wait(5)) for _ in range(2))
        third = queue.submit("t", lambda job: "third")
        both.wait(5)  # the two first jobs are running together
        assert {job.id for job in queue.running} == {first.id, second.id}
        assert queue.current is first and queue.position(second) == 0 and queue.position(third) == 1
        assert queue.find(second.id) is second and queue.waiting_ids() == [third.id]
        gate.set()
        assert [job.future.result(5) for job in (first, second, third)] == [True, True, "third"]
        assert queue.running == []
    finally:
        queue.stop()
