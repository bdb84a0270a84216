"""The web UI's routes over real HTTP with `--auth` (httpx, no browser): without a login only the login page is
served, Gradio's streams and cancel included; and an open page's heartbeat does not keep SIGTERM from stopping it."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

LOGIN = {"username": "ann", "password": "secret"}
CANCEL = {"session_hash": "s1", "fn_index": 0, "event_id": "e1"}
HEARTBEAT = "/gradio_api/heartbeat/s1"
UI_ROUTES = ("/config", "/gradio_api/info", "/gradio_api/openapi.json", "/docs", "/redoc", "/openapi.json")


def status_of(client: httpx.Client, route: str) -> int:
    """The status of a GET, without reading the body (the heartbeat's never ends)."""
    with client.stream("GET", route) as answer:
        return answer.status_code


@contextmanager
def logged_in(server) -> Iterator[httpx.Client]:
    """A client that logged in on the UI's form, as a browser does; it keeps Gradio's session cookie."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/login", data=LOGIN).status_code == 200
        yield client


def test_no_route_answers_without_a_login(guarded_webui_server):
    with httpx.Client(base_url=guarded_webui_server.url, timeout=60) as anonymous:
        for route in (*UI_ROUTES, HEARTBEAT, "/sdapi/v1/options"):
            assert status_of(anonymous, route) == 401, route
        assert anonymous.post("/gradio_api/cancel", json=CANCEL).status_code == 401
        assert anonymous.post("/gradio_api/queue/join", json={}).status_code == 401
        assert status_of(anonymous, HEARTBEAT.replace("s1", "s2") + "?x=1") == 401


def test_a_login_opens_every_route(guarded_webui_server):
    with logged_in(guarded_webui_server) as client:
        for route in UI_ROUTES:
            assert status_of(client, route) == 200, route
        with client.stream("GET", HEARTBEAT) as beat:
            assert beat.status_code == 200 and next(beat.iter_lines()) == "data: ALIVE"
        cancelled = client.post("/gradio_api/cancel", json=CANCEL)
        assert cancelled.status_code == 200 and cancelled.json() == {"success": True}
    # The API takes the same user with basic auth (the web UI's --auth also guards --api).
    with httpx.Client(base_url=guarded_webui_server.url, timeout=60, auth=("ann", "secret")) as api_client:
        assert api_client.get("/sdapi/v1/options").status_code == 200
        assert api_client.get("/docs").status_code == 200


def test_the_login_page_is_served_alone_and_refuses_strangers(guarded_webui_server):
    with httpx.Client(base_url=guarded_webui_server.url, timeout=60) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
        assert "txt2img_prompt" not in page.text, "the UI's layout is not sent before a login"
        script = re.search(r'src="\./(assets/[^"]+\.js)"', page.text)
        assert script is not None and anonymous.get(f"/{script.group(1)}").status_code == 200
        assert anonymous.post("/login", data={**LOGIN, "password": "secre"}).status_code == 400
        cross_site = anonymous.post("/login", data=LOGIN, headers={"Origin": "http://evil.example"})
        assert cross_site.status_code == 403 and not cross_site.cookies
        assert anonymous.get("/", headers={"Host": "evil.example"}).status_code == 400


def test_no_cors_headers_by_default(guarded_webui_server):
    """Gradio alone would answer any localhost origin; here only --cors-allow-origins does."""
    ask = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    with httpx.Client(base_url=guarded_webui_server.url, timeout=60) as anonymous:
        for route in ("/gradio_api/queue/join", "/sdapi/v1/txt2img"):
            assert "access-control-allow-origin" not in anonymous.options(route, headers=ask).headers, route
        assert (
            "access-control-allow-origin" not in anonymous.get("/", headers={"Origin": "http://localhost:3000"}).headers
        )


def test_gradio_file_routes_serve_only_outputs_and_assets(guarded_webui_server):
    config_file = guarded_webui_server.data_dir / "config.json"
    with logged_in(guarded_webui_server) as client:
        for path in ("/etc/passwd", str(config_file), "../../../../etc/passwd"):
            assert client.get(f"/gradio_api/file={path}").status_code in (403, 404), path


def test_sigterm_stops_the_server_with_a_heartbeat_open(own_guarded_webui_server):
    """An open tab's heartbeat stream never ends by itself; stopping must not wait for it."""
    server = own_guarded_webui_server
    with logged_in(server) as client, client.stream("GET", HEARTBEAT) as beat:
        lines = beat.iter_lines()  # kept: a dropped iterator would close the stream from this end
        assert beat.status_code == 200 and next(lines) == "data: ALIVE"
        server.process.terminate()
        # uvicorn re-raises the SIGTERM once it has shut down gracefully, so the process ends by that signal.
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM), server.log()
