"""The Queue tab in a real browser: a task queued over the API shows in the history with its thumbnail,
a Generate on the page is listed too, and the tab's buttons act on the stored tasks (pause, requeue, clear)."""

from __future__ import annotations

import time
from urllib.parse import urljoin

import httpx
import pytest

pytestmark = pytest.mark.slow  # starts a server and a browser

TASK_BODY = {"prompt": "a queued red circle", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 5}


def wait_for_state(client: httpx.Client, task_id: str, state: str, timeout: float = 180) -> dict:
    deadline, task = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        task = client.get(f"/sdapi/v1/tasks/{task_id}").json()
        if task.get("state") == state:
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} not {state} within {timeout} s: {task}")


def table_text(page, name: str) -> str:
    return page.inner_text(f"#queue_{name}")


def test_the_queue_tab_shows_a_finished_api_task_with_its_thumbnail(webui_server, browser, artifacts):
    with httpx.Client(base_url=webui_server.url.rstrip("/"), timeout=60) as client:
        answer = client.post("/sdapi/v1/tasks/txt2img", json={**TASK_BODY, "force_task_id": "task(queue-tab)"})
        assert answer.status_code == 202, answer.text
        wait_for_state(client, "task(queue-tab)", "done")

        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(webui_server.url)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=60_000)
        page.get_by_role("tab", name="Queue", exact=True).click()
        page.click("#queue_refresh")
        page.wait_for_function(
            "document.querySelector('#queue_history').innerText.includes('task(queue-tab)')", timeout=30_000
        )
        history = table_text(page, "history")
        assert "txt2img" in history and "done" in history and "a queued red circle" in history
        page.wait_for_selector("#queue_gallery img", timeout=30_000)  # the newest finished task's images
        thumbnail = httpx.get(urljoin(webui_server.url, page.get_attribute("#queue_gallery img", "src") or ""))
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"].startswith("image/")
        assert "Queue running" in page.inner_text("#queue_status")
        page.screenshot(path=str(artifacts / "queue-tab.png"))

        # A Generate on the page is stored as a task too (source "ui"), listed beside the API's.
        page.get_by_role("tab", name="txt2img", exact=True).click()
        page.fill("#txt2img_prompt textarea", "a square made on the page")
        for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
            page.locator(f"#{elem_id} input[type=number]").fill(str(value))
            page.locator(f"#{elem_id} input[type=number]").press("Enter")
        page.click("#txt2img_generate")
        page.wait_for_function(
            "document.querySelector('#txt2img_infotext').innerText.includes('Seed:')", timeout=180_000
        )
        from_page = [task for task in client.get("/sdapi/v1/tasks").json()["tasks"] if task["source"] == "ui"]
        assert [(task["kind"], task["state"], len(task["images"])) for task in from_page] == [("txt2img", "done", 1)]
        page.get_by_role("tab", name="Queue", exact=True).click()  # opening the tab redraws it
        page.wait_for_function(
            "document.querySelector('#queue_history').innerText.includes('a square made on the page')",
            timeout=30_000,
        )
        assert "\tui\t" in table_text(page, "history").replace("\n", "\t")

        # Pause from the tab: a requeued task waits in Pending until Resume.
        page.click("#queue_pause")
        page.wait_for_function("document.querySelector('#queue_status').innerText.includes('paused')")
        assert client.get("/sdapi/v1/tasks").json()["paused"] is True
        page.locator("#queue_history [role=gridcell]", has_text="task(queue-tab)").first.click()  # selects the task
        page.wait_for_function(
            "document.querySelector('#queue_selected textarea, #queue_selected input').value === 'task(queue-tab)'",
            timeout=30_000,
        )
        page.click("#queue_requeue")
        page.wait_for_function(
            "document.querySelector('#queue_pending').innerText.includes('task(queue-tab)')", timeout=30_000
        )
        page.click("#queue_resume")
        wait_for_state(client, "task(queue-tab)", "done")
        page.click("#queue_clear")
        page.wait_for_function(
            "document.querySelector('#queue_result').innerText.includes('2 task(s) removed')", timeout=30_000
        )
        assert "task(queue-tab)" not in table_text(page, "history")
        assert client.get("/sdapi/v1/tasks").json() == {"paused": False, "tasks": []}
        page.close()
