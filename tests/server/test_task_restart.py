"""The persistent task queue: a kill -9 of `sdstudio serve` loses no task, and the restart duplicates no output."""

from __future__ import annotations

import time

import httpx
import pytest
from PIL import Image

from sdstudio.engine.infotext import parse_generation_parameters
from sdstudio.engine.saving import read_infotext

from .conftest import ServeProcess

BODY = {
    "prompt": "a red circle",
    "steps": 6,
    "width": 64,
    "height": 64,
    "sampler_name": "Euler",
    "n_iter": 2,  # two images per task, saved one after the other: the kill lands between them
    "save_images": True,
}
SEEDS = {f"crash-{n}": 1000 + 10 * n for n in range(11)} | {"crash-0": -1, "crash-5": -1}
"""The seed each task is sent with; -1: drawn when it is accepted, stored, and used again by a re-run."""


def seed_of(path) -> int:
    with Image.open(path) as image:
        return int(parse_generation_parameters(read_infotext(image) or "")["Seed"])


def wait_until_second_image_samples(client: httpx.Client, task_id: str, timeout: float = 300) -> None:
    """Until `task_id` runs and samples its second image (its first is saved by then)."""
    deadline, state = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        state = client.get("/sdapi/v1/progress").json()["state"]
        if state["job"] == task_id and state["job_no"] >= 1 and state["sampling_step"] >= 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"{task_id} did not reach its second image within {timeout} s: {state}")


@pytest.mark.slow
def test_kill_9_with_one_task_running_and_ten_queued_completes_all_eleven_once(data_dir, tmp_path):
    first = ServeProcess(data_dir, tmp_path / "first.log")
    try:
        first.wait_ready()
        with httpx.Client(base_url=first.url, timeout=120) as client:
            for task_id, seed in SEEDS.items():
                answer = client.post("/sdapi/v1/tasks/txt2img", json={**BODY, "seed": seed, "force_task_id": task_id})
                assert answer.status_code == 202, answer.text
            wait_until_second_image_samples(client, "crash-0")
            states = {t["id"]: t["state"] for t in client.get("/sdapi/v1/tasks").json()["tasks"]}
        first.process.kill()
        first.process.wait(30)
    finally:
        first.stop()
    assert states == {"crash-0": "running", **{task_id: "queued" for task_id in list(SEEDS)[1:]}}
    partial = [seed_of(path) for path in (data_dir / "outputs").rglob("*.png")]
    assert len(partial) == 1, "the kill landed after the running task saved an image"

    second = ServeProcess(data_dir, tmp_path / "second.log")
    try:
        second.wait_ready()
        assert "11 stored task(s) queued again" in second.log()
        with httpx.Client(base_url=second.url, timeout=120) as client:
            deadline = time.monotonic() + 900
            while client.get("/sdapi/v1/tasks", params={"state": ["queued", "running"]}).json()["tasks"]:
                assert time.monotonic() < deadline, "the stored tasks did not finish after the restart"
                time.sleep(0.2)
            tasks = {
                t["id"]: client.get(f"/sdapi/v1/tasks/{t['id']}").json()
                for t in client.get("/sdapi/v1/tasks").json()["tasks"]
            }
    finally:
        second.stop()

    assert sorted(tasks) == sorted(SEEDS)
    seeds = {task_id: task["request"]["seed"] for task_id, task in tasks.items()}
    assert {task_id: seeds[task_id] for task_id, seed in SEEDS.items() if seed != -1} == {
        task_id: seed for task_id, seed in SEEDS.items() if seed != -1
    }
    assert -1 not in seeds.values(), "a random seed is drawn and stored when the task is accepted"
    assert partial == [seeds["crash-0"]], "the killed attempt used the stored seed, as its re-run does"
    assert {task_id: task["state"] for task_id, task in tasks.items()} == dict.fromkeys(SEEDS, "done")
    assert {task_id: task["attempts"] for task_id, task in tasks.items()} == {
        "crash-0": 2,
        **dict.fromkeys(list(SEEDS)[1:], 1),
    }
    listed = set()
    for task_id, task in tasks.items():
        samples = [image for image in task["images"] if "grid-" not in image["path"]]
        expected = [seeds[task_id], seeds[task_id] + 1]  # the re-run of crash-0 draws no new seed
        assert [seed_of(image["path"]) for image in samples] == expected, task_id
        assert [int(parse_generation_parameters(image["infotext"])["Seed"]) for image in samples] == expected
        listed |= {image["path"] for image in task["images"]}
    samples_on_disk = sorted((data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    grids_on_disk = sorted((data_dir / "outputs" / "txt2img-grids").rglob("*.png"))
    assert sorted(seed_of(path) for path in samples_on_disk) == sorted(s + i for s in seeds.values() for i in (0, 1))
    assert len(grids_on_disk) == 11, "one grid per task, none from the killed attempt"
    assert {str(path) for path in samples_on_disk + grids_on_disk} >= {p for p in listed if "outputs" in p}
    assert {str(path) for path in samples_on_disk} <= listed, "every image in the outputs is a task's result"
