"""Who may reach the API over real HTTP: credentials on every route, Host allow-list, cross-origin refusal, CORS,
and `--listen` refusing to serve the network without a login."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from sdstudio.app import open_app
from sdstudio.server.app import ServerOptions
from sdstudio.server.auth import credentials_match

from .conftest import free_port, start_server, wait_until_sampling
from .test_api_admin_routes import TXT2IMG

REPO = Path(__file__).resolve().parents[2]
ALICE = ("alice", "s3cret")
DOCS_ROUTES = ("/docs", "/redoc", "/openapi.json")


@pytest.fixture
def guarded_server(data_dir):
    running = start_server(open_app(data_dir), ServerOptions(api_auth="alice:s3cret"))
    yield running
    running.stop()


def test_docs_and_the_openapi_schema_need_credentials(guarded_server):
    with guarded_server.client() as client:
        for route in DOCS_ROUTES:
            refused = client.get(route)
            assert refused.status_code == 401, route
            assert refused.headers["www-authenticate"] == "Basic"
            assert client.get(route, auth=("alice", "wrong")).status_code == 401, route
            assert client.get(route, auth=ALICE).status_code == 200, route
        assert "/sdapi/v1/txt2img" in client.get("/openapi.json", auth=ALICE).json()["paths"]
        assert "/sdapi/v1/txt2img" not in client.get("/openapi.json").text
        # A route that does not exist says nothing either: the 404 is for people who logged in.
        assert client.get("/no-such-route").status_code == 401


def test_credentials_are_matched_whole():
    users = [("alice", "s3cret"), ("bob", "pw")]
    assert credentials_match(users, "alice", "s3cret") and credentials_match(users, "bob", "pw")
    for user, password in (("alice", "pw"), ("bob", "s3cret"), ("alice", "s3cre"), ("alice", "s3cret "), ("", "")):
        assert not credentials_match(users, user, password), (user, password)
    assert not credentials_match([], "alice", "s3cret")


def test_a_cross_origin_post_is_refused_and_does_not_interrupt_the_job(api_server):
    """A page elsewhere cannot interrupt the running job; the server's own page and curl-like clients can."""
    outcome: dict = {}

    def long_job():
        with api_server.client() as other:
            outcome["answer"] = other.post("/sdapi/v1/txt2img", json={**TXT2IMG, "steps": 400})

    job = threading.Thread(target=long_job)
    with api_server.client() as client:
        job.start()
        wait_until_sampling(client)
        running_job = api_server.queue.current
        assert running_job is not None
        refused = client.post("/sdapi/v1/interrupt", headers={"Origin": "http://evil.example"})
        assert refused.status_code == 403 and "--cors-allow-origins" in refused.json()["detail"]
        assert client.post("/sdapi/v1/interrupt", headers={"Origin": "null"}).status_code == 403
        assert not running_job.cancel.interrupted, "a refused request changed nothing"
        same_origin = client.post("/sdapi/v1/interrupt", headers={"Origin": api_server.url})
        assert same_origin.status_code == 200
        job.join(120)
    assert running_job.cancel.interrupted
    assert outcome["answer"].status_code == 200
    with api_server.client() as client:
        assert client.post("/sdapi/v1/skip").status_code == 200  # no Origin: curl, scripts, A1111 clients


def test_cross_origin_state_changes_are_refused_on_every_route(api_server):
    evil = {"Origin": "http://evil.example"}
    with api_server.client() as client:
        before = client.get("/sdapi/v1/options").json()["jpeg_quality"]
        assert client.post("/sdapi/v1/options", json={"jpeg_quality": 42}, headers=evil).status_code == 403
        for route in ("skip", "unload-checkpoint", "reload-checkpoint", "refresh-checkpoints", "txt2img"):
            assert client.post(f"/sdapi/v1/{route}", json=TXT2IMG, headers=evil).status_code == 403, route
        assert client.get("/sdapi/v1/options").json()["jpeg_quality"] == before
        # Reading is not a state change: a cross-origin GET is answered (without CORS headers the page cannot read it).
        answer = client.get("/sdapi/v1/progress", headers=evil)
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_cors_answers_only_the_configured_origins(data_dir):
    options = ServerOptions(
        cors_allow_origins=("http://app.example",), cors_allow_origins_regex=r"https://.*\.trusted\.example"
    )
    running = start_server(open_app(data_dir), options)
    try:
        with running.client() as client:
            for origin in ("http://app.example", "https://ui.trusted.example"):
                preflight = client.options(
                    "/sdapi/v1/interrupt", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
                )
                assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
                allowed = client.post("/sdapi/v1/interrupt", headers={"Origin": origin})
                assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == origin
            for origin in ("http://evil.example", "https://trusted.example.evil.example", "null"):
                preflight = client.options(
                    "/sdapi/v1/interrupt", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
                )
                assert "access-control-allow-origin" not in preflight.headers, origin
                assert client.post("/sdapi/v1/interrupt", headers={"Origin": origin}).status_code == 403, origin
    finally:
        running.stop()


def test_a_foreign_host_header_is_refused(api_server):
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends Host: evil.example."""
    port = api_server.url.rsplit(":", 1)[1]
    with api_server.client() as client:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            refused = client.get("/sdapi/v1/progress", headers={"Host": host})
            assert refused.status_code == 400 and "--allowed-hosts" in refused.json()["detail"], host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
            assert client.get("/sdapi/v1/progress", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_and_listen_widen_the_host_rule(data_dir):
    named = start_server(open_app(data_dir), ServerOptions(allowed_hosts=("studio.lan",)))
    try:
        with named.client() as client:
            assert client.get("/sdapi/v1/progress", headers={"Host": "studio.lan:7860"}).status_code == 200
            assert client.get("/sdapi/v1/progress", headers={"Host": "evil.example"}).status_code == 400
    finally:
        named.stop()
    # Listening on the network, clients use whatever name it has; credentials (required there) keep pages out.
    public = start_server(open_app(data_dir), ServerOptions(listen=True, api_auth="alice:s3cret"))
    try:
        with public.client() as client:
            assert client.get("/sdapi/v1/progress", headers={"Host": "studio.lan"}, auth=ALICE).status_code == 200
            assert client.get("/sdapi/v1/progress", headers={"Host": "studio.lan"}).status_code == 401
    finally:
        public.stop()


def test_listen_without_a_login_is_refused(capsys):
    from sdstudio.cli.main import main

    for command in (["serve", "--listen"], ["webui", "--listen", "--api"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "warning" in err and "--insecure" in err and "--api-auth" in err, err
    assert main(["serve", "--cors-allow-origins-regex", "(", "--api-auth", "a:b"]) == 2
    assert "cors-allow-origins-regex" in capsys.readouterr().err


def test_listen_with_insecure_starts_with_the_warning(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sdstudio.cli.main", "--data-dir", str(tmp_path / "data")]
    command += ["serve", "--listen", "--insecure", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while "API ready" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        text = log.read_text(errors="replace")
        assert "warning" in text and "0.0.0.0" in text
        assert httpx.get(f"http://127.0.0.1:{port}/sdapi/v1/progress", timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(30)
