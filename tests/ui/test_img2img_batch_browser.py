"""The img2img Batch tab in a real browser: folders typed in, Generate, files appear named after the inputs."""

from __future__ import annotations

import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # starts a server and a browser

GENERATION_TIMEOUT_MS = 180_000


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_batch_tab_processes_a_folder(webui_server, browser, artifacts, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(inputs / "apple.png")
    Image.new("RGB", (64, 64), (40, 40, 200)).save(inputs / "plum.png")
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(webui_server.url)
    page.wait_for_selector("#txt2img_prompt textarea", timeout=60_000)
    page.get_by_role("tab", name="img2img", exact=True).first.click()
    page.get_by_role("tab", name="Batch", exact=True).click()
    page.fill("#img2img_prompt textarea", "a fruit")
    set_slider(page, "img2img_width", 64)
    set_slider(page, "img2img_height", 64)
    set_slider(page, "img2img_steps", 2)

    # A folder that does not exist is refused by name, before anything is queued.
    page.fill("#img2img_batch_input_dir textarea", str(tmp_path / "nowhere"))
    page.click("#img2img_generate")
    page.wait_for_function(
        "document.querySelector('#img2img_infotext').innerText.includes('no such folder')", timeout=60_000
    )
    assert "img2img_batch_input_dir" in page.inner_text("#img2img_infotext")

    page.fill("#img2img_batch_input_dir textarea", str(inputs))
    page.fill("#img2img_batch_output_dir textarea", str(outputs))
    page.click("#img2img_generate")
    page.wait_for_function(
        "document.querySelector('#img2img_infotext').innerText.includes('Done: 2 image')",
        timeout=GENERATION_TIMEOUT_MS,
    )
    assert sorted(p.name for p in outputs.iterdir()) == ["apple.png", "plum.png"]
    assert Image.open(outputs / "plum.png").info["parameters"].startswith("a fruit\n")
    assert page.locator("#img2img_gallery img").count() >= 1
    page.screenshot(path=str(artifacts / "img2img_batch.png"), full_page=True)
    page.close()
