"""The task API over real HTTP: tasks by id (force_task_id), /internal/progress, pause, cancel, requeue, history."""

from __future__ import annotations

import io
import json
import threading
import time

from PIL import Image

from sdstudio.app import open_app

from .conftest import start_server, wait_until_sampling
from .test_api_basics import TASK_ENDPOINTS
from .test_api_generation import A1111_TXT2IMG_BODY

BODY = {**A1111_TXT2IMG_BODY, "steps": 2, "sampler_name": "Euler"}


def wait_for_state(client, task_id: str, *states: str, timeout: float = 300) -> dict:
    """Poll the task until it is in one of `states`; returns it."""
    deadline, task = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        task = client.get(f"/sdapi/v1/tasks/{task_id}").json()
        if task.get("state") in states:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} not {states} within {timeout} s: {task}")


def progress(client, task_id: str) -> dict:
    answer = client.post("/internal/progress", json={"id_task": task_id, "id_live_preview": -1})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_task_is_kept_by_its_forced_id_with_its_images_and_infotexts(api_server, data_dir):
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", json={**BODY, "seed": 77, "force_task_id": "task(api-1)"})
        assert answer.status_code == 200, answer.text
        task = client.get("/sdapi/v1/tasks/task(api-1)").json()
        assert (task["state"], task["kind"], task["attempts"], task["position"]) == ("done", "txt2img", 1, None)
        assert task["request"]["seed"] == 77 and task["request"]["prompt"] == BODY["prompt"]
        assert task["info"]["seed"] == 77 and task["client"] == "address 127.0.0.1"
        [image] = task["images"]
        assert "Seed: 77" in image["infotext"]
        assert image["path"].startswith(str(data_dir / "tasks" / "results"))
        file = client.get(image["url"])
        assert file.status_code == 200 and file.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(file.content)).info["parameters"] == image["infotext"]
        assert client.get("/sdapi/v1/tasks/task(api-1)/images/1").status_code == 404

        finished = progress(client, "task(api-1)")
        assert (finished["active"], finished["queued"], finished["completed"]) == (False, False, True)
        by_query = client.get("/internal/progress", params={"id_task": "task(api-1)"}).json()
        assert by_query == finished
        assert progress(client, "task(unknown)")["completed"] is False

        listed = client.get("/sdapi/v1/tasks", params={"state": "done"}).json()
        assert [t["id"] for t in listed["tasks"]] == ["task(api-1)"] and listed["paused"] is False
        assert client.get("/sdapi/v1/tasks", params={"state": "queued"}).json()["tasks"] == []
        refused = client.get("/sdapi/v1/tasks", params={"state": "bogus"})
        assert refused.status_code == 422 and "state" in refused.text
        assert client.get("/sdapi/v1/tasks/task(none)").status_code == 404


def test_pause_cancel_requeue_and_clear_history(api_server, data_dir):
    with api_server.client() as client:
        assert client.post("/sdapi/v1/tasks/pause").json() == {"paused": True}
        first = client.post("/sdapi/v1/tasks/txt2img", json={**BODY, "seed": 1, "force_task_id": "q1"})
        assert first.status_code == 202, first.text
        assert (first.json()["state"], first.json()["position"]) == ("queued", 1)
        second = client.post("/sdapi/v1/tasks/txt2img", json={**BODY, "seed": 2, "force_task_id": "q2"}).json()
        assert second["position"] == 2
        waiting = progress(client, "q2")
        assert (waiting["active"], waiting["queued"], waiting["completed"]) == (False, True, False)
        assert waiting["textinfo"] == "In queue: 2/2 (queue paused)"

        reused = client.post("/sdapi/v1/tasks/txt2img", json={**BODY, "force_task_id": "q1"})
        assert reused.status_code == 409 and "force_task_id" in reused.json()["detail"]
        bad_id = client.post("/sdapi/v1/txt2img", json={**BODY, "force_task_id": "a/b"})
        assert bad_id.status_code == 422 and "force_task_id" in bad_id.json()["detail"]

        # A client waiting on /txt2img for a task that is cancelled is answered, not left hanging.
        answers = {}
        waiter = threading.Thread(
            target=lambda: answers.update(
                q3=client.post("/sdapi/v1/txt2img", json={**BODY, "seed": 3, "force_task_id": "q3"})
            )
        )
        waiter.start()
        wait_for_state(client, "q3", "queued")
        assert client.post("/sdapi/v1/tasks/q1/cancel").json()["state"] == "cancelled"
        assert client.post("/sdapi/v1/tasks/q3/cancel").json()["state"] == "cancelled"
        waiter.join(60)
        assert answers["q3"].status_code == 409 and "cancelled" in answers["q3"].json()["detail"]
        assert client.post("/sdapi/v1/tasks/q1/cancel").status_code == 409, "a finished task cannot be cancelled"
        cancelled = client.get("/sdapi/v1/tasks", params={"state": "cancelled"}).json()["tasks"]
        assert [t["id"] for t in cancelled] == ["q1", "q3"]

        assert client.post("/sdapi/v1/tasks/resume").json() == {"paused": False}
        assert "Seed: 2" in wait_for_state(client, "q2", "done")["images"][0]["infotext"]
        requeued = client.post("/sdapi/v1/tasks/q1/requeue")
        assert requeued.status_code == 200 and requeued.json()["state"] in ("queued", "running", "done")
        done = wait_for_state(client, "q1", "done")
        assert done["attempts"] == 1 and "Seed: 1" in done["images"][0]["infotext"]
        kept = done["images"][0]["path"]

        client.post("/sdapi/v1/tasks/pause")
        client.post("/sdapi/v1/tasks/q2/requeue")
        assert client.post("/sdapi/v1/tasks/q2/requeue").status_code == 409, "it is queued already"
        client.post("/sdapi/v1/tasks/q2/cancel")
        client.post("/sdapi/v1/tasks/resume")

        assert client.delete("/sdapi/v1/tasks").json() == {"removed": 3}
        assert client.get("/sdapi/v1/tasks/q1").status_code == 404
        assert client.get("/sdapi/v1/tasks").json()["tasks"] == []
        assert not (data_dir / "tasks" / "results").exists() or not any((data_dir / "tasks" / "results").iterdir())
        assert kept.startswith(str(data_dir / "tasks" / "results"))


def test_cancel_interrupts_the_running_task_and_progress_follows_it_by_id(api_server):
    with api_server.client() as client:
        queued = client.post("/sdapi/v1/tasks/txt2img", json={**BODY, "steps": 150, "force_task_id": "long"})
        assert queued.status_code == 202, queued.text
        wait_until_sampling(client, step=2)
        running = progress(client, "long")
        assert (running["active"], running["queued"], running["completed"]) == (True, False, False)
        assert 0 < running["progress"] < 1 and running["eta"] > 0
        assert client.get("/sdapi/v1/tasks/long").json()["position"] == 0
        assert client.post("/sdapi/v1/tasks/long/cancel").status_code == 200
        interrupted = wait_for_state(client, "long", "interrupted", "done")
        assert interrupted["state"] == "interrupted" and interrupted["finished_at"] is not None
        assert progress(client, "long")["completed"] is True


def image_bytes(client, task: dict) -> list[bytes]:
    return [client.get(image["url"]).content for image in task["images"]]


def test_a_random_seed_is_drawn_once_and_stored_so_a_requeued_task_makes_the_same_images(api_server):
    body = {**BODY, "seed": -1, "subseed": -1, "subseed_strength": 0.4}
    with api_server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", json={**body, "force_task_id": "drawn"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["parameters"]["seed"] == -1, "the answer echoes the request as A1111 does"
        info = json.loads(answer.json()["info"])
        first = client.get("/sdapi/v1/tasks/drawn").json()
        seed, subseed = first["request"]["seed"], first["request"]["subseed"]
        assert (seed, subseed) == (info["seed"], info["subseed"]) and -1 not in (seed, subseed)
        assert f"Seed: {seed}," in first["images"][0]["infotext"]
        assert f"Variation seed: {subseed}," in first["images"][0]["infotext"]
        made = image_bytes(client, first)

        assert client.post("/sdapi/v1/tasks/drawn/requeue").status_code == 200
        again = wait_for_state(client, "drawn", "done")
        assert [image["infotext"] for image in again["images"]] == [image["infotext"] for image in first["images"]]
        assert image_bytes(client, again) == made


def test_a_paused_queue_stays_paused_after_a_restart_and_its_tasks_keep_their_drawn_seed(data_dir):
    first = start_server(open_app(data_dir))
    try:
        with first.client() as client:
            assert client.post("/sdapi/v1/tasks/pause").json() == {"paused": True}
            queued = client.post("/sdapi/v1/tasks/txt2img", json={**BODY, "seed": -1, "force_task_id": "kept"})
            assert queued.status_code == 202, queued.text
            seed = client.get("/sdapi/v1/tasks/kept").json()["request"]["seed"]
            assert seed != -1
    finally:
        first.stop()

    second = start_server(open_app(data_dir), resume_tasks=True)
    try:
        with second.client() as client:
            listed = client.get("/sdapi/v1/tasks").json()
            assert listed["paused"] is True
            assert [(t["id"], t["state"], t["position"]) for t in listed["tasks"]] == [("kept", "queued", 1)]
            assert progress(client, "kept")["textinfo"] == "In queue: 1/1 (queue paused)"
            assert client.post("/sdapi/v1/tasks/resume").json() == {"paused": False}
            done = wait_for_state(client, "kept", "done")
            assert f"Seed: {seed}," in done["images"][0]["infotext"]
            assert client.get("/sdapi/v1/tasks").json()["paused"] is False
    finally:
        second.stop()

    third = start_server(open_app(data_dir), resume_tasks=True)
    try:
        with third.client() as client:
            assert client.get("/sdapi/v1/tasks").json()["paused"] is False, "a resume is stored too"
    finally:
        third.stop()


def test_the_task_routes_are_documented_in_openapi(api_server):
    with api_server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    undocumented = [(method, path) for method, path in TASK_ENDPOINTS if not paths[path][method].get("description")]
    assert undocumented == []
