"""Errors and resource limits over real HTTP (#19 classes 6 and 7).

A server error is answered with an id, never the exception's text; work too large for the
machine is refused at once, naming the field; the queue, each client's share of it and the
request body are bounded by settings that /options can change.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading

import httpx
import pytest
import torch
from PIL import Image

from sdstudio.app import open_app
from sdstudio.server.app import ServerOptions

from .conftest import start_server

BODY = {"prompt": "a red circle", "seed": 1, "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler"}


@pytest.fixture
def server(data_dir_with_model):
    running = start_server(open_app(data_dir_with_model))
    yield running
    running.stop()


def hold_the_device(queue) -> threading.Event:
    """Queue a job that runs until the returned event is set, so later jobs wait."""
    release = threading.Event()
    queue.submit("hold", lambda job: release.wait(60))
    return release


def extras_in_thread(client: httpx.Client, answers: list) -> threading.Thread:
    """Post a (cheap) extras job from another thread; its answer is appended to `answers`."""
    body = {"image": png_base64(8), "upscaling_resize": 1}
    thread = threading.Thread(target=lambda: answers.append(client.post("/sdapi/v1/extra-single-image", json=body)))
    thread.start()
    return thread


def wait_for_waiting_jobs(queue, count: int) -> None:
    event = threading.Event()
    for _ in range(2000):  # polls the queue, up to 20 s; no timing is asserted
        if queue.pending_count() >= count:
            return
        event.wait(0.01)
    raise AssertionError(f"{count} jobs never waited in the queue")


# -- class 6: errors leak nothing ----------------------------------------------------------


def test_a_server_error_is_500_with_an_id_in_the_log_and_no_exception_text(server, monkeypatch, caplog):
    def broken(request, control, scripts=None):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server.app.engine, "txt2img", broken)
    with caplog.at_level(logging.ERROR, logger="sdstudio.server"), server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", json=BODY)
    assert answer.status_code == 500
    assert "secret detail" not in answer.text and "RuntimeError" not in answer.text
    error_id = answer.json()["error_id"]
    assert error_id in answer.json()["detail"]
    logged = [record for record in caplog.records if error_id in record.getMessage()]
    assert logged and logged[0].exc_info is not None, "the log line carries the id and the traceback"
    assert "secret detail" in caplog.text


def test_running_out_of_memory_is_answered_as_too_large_and_the_server_keeps_serving(server, monkeypatch):
    errors = [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: not enough memory"),
        MemoryError(),
    ]
    real_txt2img = server.app.engine.txt2img
    with server.client() as client:
        for error in errors:

            def out_of_memory(request, control, scripts=None, error=error):
                raise error

            monkeypatch.setattr(server.app.engine, "txt2img", out_of_memory)
            answer = client.post("/sdapi/v1/txt2img", json=BODY)
            assert answer.status_code == 507, (error, answer.text)
            detail = answer.json()["detail"]
            assert "too large" in detail and answer.json()["error_id"] in detail
            assert "alloc_cpu" not in answer.text and "Error" not in detail
        monkeypatch.setattr(server.app.engine, "txt2img", real_txt2img)
        assert client.post("/sdapi/v1/txt2img", json=BODY).status_code == 200


def test_client_errors_stay_4xx_with_their_message(server):
    with server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": "Nope"})
    assert answer.status_code == 422 and "sampler_name" in answer.json()["detail"]


# -- class 7: limits -----------------------------------------------------------------------


OVER_THE_DEFAULT_LIMITS = [
    ({"width": 8192, "height": 8192}, "width"),
    ({"width": 1024, "height": 1024, "batch_size": 64}, "batch_size"),
    ({"enable_hr": True, "hr_scale": 8, "width": 1024, "height": 1024}, "hr_scale"),
    ({"batch_size": 64, "n_iter": 10000}, "n_iter"),
    ({"steps": 999}, "steps"),
    ({"enable_hr": True, "hr_second_pass_steps": 999}, "hr_second_pass_steps"),
]


def test_work_over_the_default_limits_is_422_naming_the_field_at_once(server):
    # Before the limits these ran for minutes or hours; the short timeout makes that a failure.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for changes, field in OVER_THE_DEFAULT_LIMITS:
            answer = client.post("/sdapi/v1/txt2img", json={**BODY, **changes})
            assert answer.status_code == 422, (changes, answer.text)
            assert answer.json()["detail"].startswith(f"{field}:"), (changes, answer.text)
    assert server.queue.pending_count() == 0 and server.queue.current is None, "nothing was queued"


def test_limits_are_settings_that_options_change_and_check(server):
    with server.client() as client:
        assert client.post("/sdapi/v1/options", json={"limit_steps": 2}).is_success
        refused = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [png_base64(64)], "steps": 3})
        assert refused.status_code == 422 and refused.json()["detail"].startswith("steps:")
        assert client.post("/sdapi/v1/options", json={"limit_steps": 0}).is_success  # 0: no limit
        assert client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [png_base64(64)], "steps": 3}).is_success
        for option, value in (("limit_queued_jobs", -1), ("limit_batch_megapixels", "NaN"), ("limit_steps", "x")):
            bad = client.post("/sdapi/v1/options", json={option: value})
            assert bad.status_code == 422 and option in bad.text, (option, bad.text)


def test_a_full_queue_answers_503_with_retry_after(server):
    release = hold_the_device(server.queue)
    try:
        with server.client() as client:
            assert client.post("/sdapi/v1/options", json={"limit_queued_jobs": 2}).is_success
            answers: list[httpx.Response] = []
            threads = [extras_in_thread(client, answers) for _ in range(2)]
            wait_for_waiting_jobs(server.queue, 2)
            full = client.post("/sdapi/v1/txt2img", json=BODY)
            assert full.status_code == 503, full.text
            assert int(full.headers["Retry-After"]) >= 1
            assert "limit_queued_jobs" in full.json()["detail"]
            assert server.queue.pending_count() == 2, "the refused request queued nothing"
            release.set()
            for thread in threads:
                thread.join(60)
    finally:
        release.set()
    assert [answer.status_code for answer in answers] == [200, 200], "the queued jobs still ran"


def test_each_client_has_a_bound_on_its_waiting_jobs(data_dir_with_model):
    server = start_server(open_app(data_dir_with_model), ServerOptions(api_auth="alice:a,bob:b"))
    release = hold_the_device(server.queue)
    try:
        alice = server.client(auth=("alice", "a"))
        bob = server.client(auth=("bob", "b"))
        assert alice.post("/sdapi/v1/options", json={"limit_queued_jobs_per_client": 1}).is_success
        answers: list[httpx.Response] = []
        threads = [extras_in_thread(alice, answers)]
        wait_for_waiting_jobs(server.queue, 1)
        second = alice.post("/sdapi/v1/txt2img", json=BODY)
        assert second.status_code == 429, second.text
        assert int(second.headers["Retry-After"]) >= 1 and "limit_queued_jobs_per_client" in second.text
        threads.append(extras_in_thread(bob, answers))  # another client still gets a place
        wait_for_waiting_jobs(server.queue, 2)
        release.set()
        for thread in threads:
            thread.join(60)
        assert [answer.status_code for answer in answers] == [200, 200]
    finally:
        release.set()
        server.stop()


# What A1111 clients post that puts a model job (load, unload, rescan) on the queue.
CONTROL_JOBS = [
    ("/sdapi/v1/options", {"sd_model_checkpoint": "random-tiny.safetensors"}),
    ("/sdapi/v1/reload-checkpoint", None),
    ("/sdapi/v1/unload-checkpoint", None),
    ("/sdapi/v1/refresh-embeddings", None),
]


def post_in_thread(client: httpx.Client, path: str, answers: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.append(client.post(path)))
    thread.start()
    return thread


def test_model_jobs_keep_to_the_queue_limits_too(data_dir_with_model):
    """Loads, unloads and rescans wait in the queue like generation: each client's share and the total are bounded."""
    server = start_server(open_app(data_dir_with_model), ServerOptions(api_auth="alice:a,bob:b,carol:c"))
    release = hold_the_device(server.queue)
    try:
        # Short timeouts: a request that queued instead of being refused would wait for the held job.
        alice, carol = (
            httpx.Client(base_url=server.url, auth=(name, name[0]), timeout=10) for name in ("alice", "carol")
        )
        limits = {"limit_queued_jobs_per_client": 1, "limit_queued_jobs": 2}
        assert alice.post("/sdapi/v1/options", json=limits).is_success
        answers: list[httpx.Response] = []
        threads = [post_in_thread(server.client(auth=("alice", "a")), "/sdapi/v1/reload-checkpoint", answers)]
        wait_for_waiting_jobs(server.queue, 1)
        for path, body in CONTROL_JOBS:
            refused = alice.post(path, json=body)
            assert refused.status_code == 429, (path, refused.text)
            assert "limit_queued_jobs_per_client" in refused.json()["detail"] and refused.headers["Retry-After"]
        threads.append(post_in_thread(server.client(auth=("bob", "b")), "/sdapi/v1/unload-checkpoint", answers))
        wait_for_waiting_jobs(server.queue, 2)
        for path, body in CONTROL_JOBS:
            full = carol.post(path, json=body)
            assert full.status_code == 503 and "limit_queued_jobs" in full.json()["detail"], (path, full.text)
        assert server.queue.pending_count() == 2, "the refused requests queued nothing"
        release.set()
        for thread in threads:
            thread.join(60)
        assert [answer.status_code for answer in answers] == [200, 200]
    finally:
        release.set()
        server.stop()


def test_a_body_over_the_limit_is_413(server):
    image = png_base64(1024, noise=True)  # about 4 MB of base64
    body = {"image": image}
    with server.client() as client:
        assert client.post("/sdapi/v1/png-info", json=body).status_code == 200
        assert client.post("/sdapi/v1/options", json={"limit_request_body_mb": 1}).is_success
        declared = client.post("/sdapi/v1/png-info", json=body)
        assert declared.status_code == 413 and "limit_request_body_mb" in declared.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            text = httpx.Request("POST", "/", json=body).content
            for start in range(0, len(text), 65536):
                yield text[start : start + 65536]

        streamed = client.post("/sdapi/v1/png-info", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413 and "limit_request_body_mb" in streamed.json()["detail"]
        assert client.get("/sdapi/v1/options").is_success


# -- helpers -------------------------------------------------------------------------------


def png_base64(size: int, noise: bool = False) -> str:
    """A PNG of `size`×`size`: plain red, or random noise (which does not compress)."""
    if noise:
        image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    else:
        image = Image.new("RGB", (size, size), "red")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
