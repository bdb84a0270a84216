"""`serve --cluster`: the API on an ingress, the generation on two Ray Serve replicas on two simulated nodes.

One local Ray cluster (ray.cluster_utils: two nodes of one CPU, so the two replicas land on
different nodes) serves every test here; the bundled tiny model, 64x64.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sdstudio.app import open_app
from sdstudio.engine.job_queue import JobQueue
from server.conftest import start_server

ray = pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")
serve = pytest.importorskip("ray.serve")

from ray.cluster_utils import Cluster  # noqa: E402

from sdstudio.server.cluster import NAMESPACE, cluster_app, start_cluster  # noqa: E402

pytestmark = pytest.mark.slow

REPLICAS = 2


def job(seed: int, steps: int = 2, task_id: str = "") -> dict[str, Any]:
    """An A1111 client's txt2img body on the tiny model."""
    return {
        "prompt": "a red cube",
        "seed": seed,
        "steps": steps,
        "width": 64,
        "height": 64,
        "sampler_name": "Euler",
        "force_task_id": task_id,
    }


def eventually(what: Callable[[], Any], timeout: float = 120) -> Any:
    """What `what` returns once it is truthy (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def in_background(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `call` in a thread; its result (or error) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # reported by the test that joins
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-node Ray cluster, the deployment with two replicas, and the ingress API over real HTTP."""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, namespace=NAMESPACE)
    server = workers = None
    try:
        app = open_app(tmp_path_factory.mktemp("cluster") / "data")
        workers = start_cluster(app, nodes.address, REPLICAS)
        server = start_server(cluster_app(app, workers), queue=JobQueue(workers.replicas))
        yield server, workers
    finally:
        if server is not None:
            server.stop()
        if workers is not None:
            workers.close()
        serve.shutdown()
        ray.shutdown()
        nodes.shutdown()


def seed_of(answer: dict[str, Any]) -> int:
    info = json.loads(answer["info"])
    assert info["infotexts"][0].count(f"Seed: {info['seed']}") == 1
    return info["seed"]


def test_sixteen_jobs_from_eight_clients_all_come_back_with_their_seeds(cluster):
    server, _ = cluster

    def client_jobs(number: int) -> list[int]:
        with server.client() as client:
            seeds = []
            for index in range(2):
                answer = client.post("/sdapi/v1/txt2img", json=job(1000 + 10 * number + index))
                assert answer.status_code == 200, answer.text
                assert len(answer.json()["images"]) == 1
                seeds.append(seed_of(answer.json()))
            return seeds

    runs = [in_background(lambda number=number: client_jobs(number)) for number in range(8)]
    for thread, _ in runs:
        thread.join(180)
    assert [out[0] for _, out in runs] == [[1000 + 10 * number, 1001 + 10 * number] for number in range(8)]
    with server.client() as client:
        tasks = client.get("/sdapi/v1/tasks").json()["tasks"]
    assert len(tasks) == 16 and {task["state"] for task in tasks} == {"done"}


def test_progress_and_interrupt_act_on_the_right_task(cluster):
    server, workers = cluster
    with server.client() as client:
        long_jobs = {
            task_id: in_background(lambda t=task_id: client.post("/sdapi/v1/txt2img", json=job(5, 300, t)))
            for task_id in ("stop-me", "keep-me")
        }
        for task_id in long_jobs:  # both run at once, one per replica
            eventually(lambda t=task_id: workers.worker_of(t))
        assert workers.worker_of("stop-me") != workers.worker_of("keep-me")
        progress = eventually(
            lambda: (
                (answer := client.get("/internal/progress", params={"id_task": "keep-me"}).json())["progress"]
                and answer
            )
        )
        assert progress["active"] is True and 0 < progress["progress"] < 1
        assert client.post("/sdapi/v1/tasks/stop-me/cancel").status_code == 200
        for thread, _ in long_jobs.values():
            thread.join(180)
        stopped, kept = (client.get(f"/sdapi/v1/tasks/{task_id}").json() for task_id in long_jobs)
    assert stopped["state"] == "interrupted" and kept["state"] == "done"
    assert json.loads(long_jobs["keep-me"][1][0].json()["info"])["steps"] == 300


def test_jobs_go_to_the_replica_that_has_their_checkpoint_loaded(cluster):
    server, workers = cluster
    # Both replicas hold the default checkpoint by now; the first of these jobs loads this one on one of them.
    body = {**job(3, 30), "override_settings": {"sd_model_checkpoint": "sdstudio-tiny"}}
    ran_on = []
    with server.client() as client:
        for number in range(4):
            task_id = f"routed-{number}"
            thread, out = in_background(
                lambda t=task_id: client.post("/sdapi/v1/txt2img", json={**body, "force_task_id": t})
            )
            ran_on.append(eventually(lambda t=task_id: workers.worker_of(t)))
            thread.join(120)
            assert out[0].status_code == 200, out[0].text
    assert len(set(ran_on)) == 1, ran_on


def test_a_replica_killed_mid_job_loses_no_task(cluster):
    server, workers = cluster
    with server.client() as client:
        doomed = in_background(lambda: client.post("/sdapi/v1/txt2img", json=job(42, 60, "doomed")))
        victim = eventually(lambda: workers.worker_of("doomed"))
        others = [
            in_background(lambda seed=seed: client.post("/sdapi/v1/txt2img", json=job(seed))) for seed in (7, 8, 9)
        ]
        os.kill(victim.pid, signal.SIGKILL)
        for thread, _ in (doomed, *others):
            thread.join(180)
        answers = [out[0] for _, out in (doomed, *others)]
        assert [answer.status_code for answer in answers] == [200] * 4, [answer.text for answer in answers]
        assert [seed_of(answer.json()) for answer in answers] == [42, 7, 8, 9]
        record = client.get("/sdapi/v1/tasks/doomed").json()
    assert record["state"] == "done" and len(record["images"]) == 1


def test_options_set_on_the_ingress_hold_on_every_replica(cluster):
    """POST /options reaches the replicas: each job after it runs under the new options, on either node."""
    server, _ = cluster
    with server.client() as client:
        assert client.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 31337}).status_code == 200
        try:
            answers = [
                client.post("/sdapi/v1/txt2img", json={**job(seed), "sampler_name": "Euler a"}) for seed in (7, 8, 9)
            ]
            for answer in answers:
                assert answer.status_code == 200, answer.text
                assert "ENSD: 31337" in json.loads(answer.json()["info"])["infotexts"][0]
        finally:
            client.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 0})
        after = client.post("/sdapi/v1/txt2img", json={**job(7), "sampler_name": "Euler a"})
        assert "ENSD" not in json.loads(after.json()["info"])["infotexts"][0]
