"""Hostile prompts over real HTTP (issue #19): refused at once naming the field, or run in seconds,
and the server answers /progress all the while.

Seen before: a 20 MB prompt still running after 12 minutes, 100 KB of nested `[` eating memory,
50 KB of mostly spaces freezing the whole server for 83 s, 135 `[a:b:0.5]` tags taking 27 s.
"""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from PIL import Image

from sdstudio.app import open_app

from .conftest import start_server
from .test_api_generation import A1111_TXT2IMG_BODY

SECONDS_FOR_A_REFUSAL = 2  # generous for a loaded test machine; the check itself takes milliseconds
SECONDS_FOR_A_JOB = 10  # a 3-step 64×64 job on the tiny model (under 1 s); the hostile prompts took minutes
SECONDS_FOR_PROGRESS = 1


@pytest.fixture
def server(data_dir_with_model):
    running = start_server(open_app(data_dir_with_model))
    yield running
    running.stop()


def tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def timed_post(client, path: str, body: dict):
    started = time.monotonic()
    answer = client.post(path, json=body)
    return answer, time.monotonic() - started


def run_while_polling_progress(server, body: dict) -> tuple:
    """POST txt2img in a thread while this thread polls /progress; (answer, job seconds, slowest poll).

    An ordinary job runs first, so that loading the model is not what is timed.
    """
    with server.client() as client:
        assert client.post("/sdapi/v1/txt2img", json=A1111_TXT2IMG_BODY).status_code == 200
    outcome: dict = {}

    def post():
        with server.client() as other:
            outcome["answer"], outcome["seconds"] = timed_post(other, "/sdapi/v1/txt2img", body)

    thread = threading.Thread(target=post)
    slowest = 0.0
    with server.client() as client:
        thread.start()
        while thread.is_alive():
            started = time.monotonic()
            assert client.get("/sdapi/v1/progress").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        thread.join()
    return outcome["answer"], outcome["seconds"], slowest


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"])
def test_an_oversized_prompt_is_refused_at_once_naming_the_field(server, field):
    body = {**A1111_TXT2IMG_BODY, field: "a cat " * 350_000}  # 2 MB (the report: 20 MB, 12 minutes, no end)
    with server.client() as client:
        answer, seconds = timed_post(client, "/sdapi/v1/txt2img", body)
        assert answer.status_code == 422, answer.text[:300]
        assert answer.json()["errors"].startswith(f"{field}: is 2100000 characters long; at most 10000")
        assert "prompt_max_length" in answer.json()["errors"]
        assert seconds < SECONDS_FOR_A_REFUSAL
        img2img_body = {field: "a cat " * 350_000, "init_images": [tiny_png()], "steps": 2, "width": 64, "height": 64}
        if not field.startswith("hr_"):  # img2img has no hires pass
            img2img, seconds = timed_post(client, "/sdapi/v1/img2img", img2img_body)
            assert img2img.status_code == 422 and img2img.json()["errors"].startswith(f"{field}: is 2100000")
            assert seconds < SECONDS_FOR_A_REFUSAL
        assert client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0  # nothing was queued


@pytest.mark.parametrize(("field", "text"), [("prompt", "[" * 5_000), ("negative_prompt", "(" * 5_000 + "x")])
def test_deeply_nested_brackets_are_refused_naming_the_field(server, field, text):
    with server.client() as client:
        # 100 KB of "[" (the report: memory grew by 40 MB/s up to 6 GB) is over the length limit...
        answer, seconds = timed_post(client, "/sdapi/v1/txt2img", {**A1111_TXT2IMG_BODY, field: "[" * 100_000})
        assert answer.status_code == 422 and answer.json()["errors"].startswith(f"{field}: is 100000 characters")
        assert seconds < SECONDS_FOR_A_REFUSAL
        # ...and within it, nesting past 100 levels is refused too.
        answer, seconds = timed_post(client, "/sdapi/v1/txt2img", {**A1111_TXT2IMG_BODY, field: text})
        assert answer.status_code == 422, answer.text[:300]
        assert answer.json()["errors"] == f"{field}: has 5000 brackets open at once; at most 100 are accepted"
        assert seconds < SECONDS_FOR_A_REFUSAL


def test_many_schedules_run_in_seconds_while_progress_answers(server):
    # 135 [a:b:0.5] tags in 2 KB took 27 s of parsing (A1111's Earley grammar is cubic).
    tags = "".join(f"[a{i}:b:0.5]" for i in range(135))
    assert len(tags) < 2048
    answer, seconds, slowest_poll = run_while_polling_progress(server, {**A1111_TXT2IMG_BODY, "prompt": tags})
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["images"] and answer.json()["parameters"]["prompt"] == tags
    assert seconds < SECONDS_FOR_A_JOB
    assert slowest_poll < SECONDS_FOR_PROGRESS


def test_mostly_spaces_do_not_freeze_the_server(server):
    with server.client() as client:
        # The report's prompt was 50 KB; an operator may allow that much.
        assert client.post("/sdapi/v1/options", json={"prompt_max_length": 60_000}).status_code == 200
    spaces = ("a BREAK" + " " * 4_000 + ": 0.5 AND ") * 12 + "[cat|dog]"
    assert len(spaces) > 48_000
    body = {**A1111_TXT2IMG_BODY, "prompt": spaces, "negative_prompt": " " * 20_000 + "x"}
    answer, seconds, slowest_poll = run_while_polling_progress(server, body)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["images"]
    assert seconds < SECONDS_FOR_A_JOB
    assert slowest_poll < SECONDS_FOR_PROGRESS  # before: even /progress waited 83 s


def test_a_pasted_infotext_of_spaces_does_not_freeze_the_server(server):
    # The infotext is read in the request handler itself, on the server's event loop; one line of
    # it is read for "Key: value" pairs (A1111's regex: quadratic on long runs of words or spaces).
    infotext = "a" + " " * 9_000 + "cat"
    body = {**A1111_TXT2IMG_BODY, "infotext": infotext}
    answer, seconds, slowest_poll = run_while_polling_progress(server, body)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["images"]
    assert seconds < SECONDS_FOR_A_JOB
    assert slowest_poll < SECONDS_FOR_PROGRESS
