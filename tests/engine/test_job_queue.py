"""The job queue: arrival order, one at a time, failures contained, interrupt targets the running job."""

from __future__ import annotations

import threading

import pytest

from sdstudio.engine.job_queue import JobQueue


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
