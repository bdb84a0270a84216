"""The web UI in a real browser: type a prompt, Generate, see the image and its infotext,
interrupt a long job, and check that the page asked nothing of the internet.

Screenshots land in artifacts/ui/ (git-ignored): the page after the first image, the
progress bar with a live preview during the long job, and the page after Interrupt.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts a server and a browser: ~1 to 2 minutes on 2 shared cores

GENERATION_TIMEOUT_MS = 180_000


def set_slider(page, elem_id: str, value: int) -> None:
    """Type a value into a Gradio slider's number box and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def open_page(webui_server, browser):
    """A new page on the web UI, once its txt2img tab is there."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(webui_server.url)
    page.wait_for_selector("#txt2img_prompt textarea", timeout=60_000)
    return page


def draw_stroke(page, editor_id: str) -> None:
    """Take the brush of an image editor and drag one stroke across the middle of its canvas."""
    page.wait_for_function(f"document.querySelector('#{editor_id} [aria-label=Brush]') !== null", timeout=30_000)
    page.locator(f"#{editor_id} [aria-label=Brush]").first.click()
    box = page.locator(f"#{editor_id} canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 20, y)
    page.mouse.down()
    page.mouse.move(x + 20, y + 5, steps=8)
    page.mouse.up()


def gallery_image_count(page, kind: str) -> int:
    return page.locator(f"#{kind}_gallery img").count()


def test_generate_then_interrupt_in_the_browser(webui_server, browser, artifacts):
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    outside: list[str] = []
    local = ("http://127.0.0.1", "data:", "blob:", "about:")
    page.on("request", lambda request: None if request.url.startswith(local) else outside.append(request.url))
    page.goto(webui_server.url)
    page.wait_for_selector("#txt2img_prompt textarea", timeout=60_000)

    # -- one image: prompt, small size, few steps, Generate --------------------------------
    page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
    page.fill("#txt2img_neg_prompt textarea", "blurry")
    set_slider(page, "txt2img_width", 64)
    set_slider(page, "txt2img_height", 64)
    set_slider(page, "txt2img_steps", 6)
    page.locator("#txt2img_seed input").fill("1234")
    page.wait_for_function(
        "document.querySelector('#txt2img_token_counter').innerText.trim() === '7/75'", timeout=30_000
    )
    page.click("#txt2img_generate")
    page.wait_for_function(
        "document.querySelector('#txt2img_infotext').innerText.includes('Seed:')", timeout=GENERATION_TIMEOUT_MS
    )
    info = page.inner_text("#txt2img_infotext")
    assert "a red circle on a blue background" in info
    assert "Negative prompt: blurry" in info
    assert "Seed: 1234" in info
    assert "Sampler: DPM++ 2M" in info
    assert "Size: 64x64" in info
    assert "Steps: 6" in info
    assert gallery_image_count(page, "txt2img") >= 1
    assert "Model: sdstudio-tiny" in info
    assert "sdstudio-tiny" in page.locator("#setting_sd_model_checkpoint input").input_value()
    saved = list((webui_server.data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    assert len(saved) == 1 and "-1234-" in saved[0].name
    page.screenshot(path=str(artifacts / "txt2img_generated.png"), full_page=True)

    # -- Reuse puts the image's seed back; Random sets -1 ------------------------------------
    page.click("#txt2img_random_seed")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '-1'", timeout=30_000)
    page.click("#txt2img_reuse_seed")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '1234'", timeout=30_000)

    # -- a long job: wait for the progress bar and a live preview, then Interrupt ------------
    set_slider(page, "txt2img_batch_count", 100)
    set_slider(page, "txt2img_steps", 40)
    page.click("#txt2img_generate")
    page.wait_for_function(
        "(() => { const t = document.querySelector('#txt2img_progress').innerText; return /step [1-9]/.test(t); })()",
        timeout=GENERATION_TIMEOUT_MS,
    )
    progress = page.inner_text("#txt2img_progress")
    assert re.search(r"\d+%", progress) and "image batch" in progress
    page.wait_for_function(
        "document.querySelector('#txt2img_progress').innerText.includes('ETA')", timeout=GENERATION_TIMEOUT_MS
    )
    page.screenshot(path=str(artifacts / "txt2img_progress.png"), full_page=True)
    # The UI's job runs on the API's queue: A1111's progress endpoint reports it.
    with urllib.request.urlopen(webui_server.url + "sdapi/v1/progress?skip_current_image=true", timeout=30) as answer:
        api_progress = json.load(answer)
    assert api_progress["state"]["job_count"] == 100 and api_progress["state"]["sampling_steps"] == 40
    assert api_progress["progress"] > 0
    page.click("#txt2img_interrupt")
    page.wait_for_function(
        "document.querySelector('#txt2img_infotext').innerText.includes('Interrupted')", timeout=GENERATION_TIMEOUT_MS
    )
    assert page.inner_text("#txt2img_progress").strip() == ""
    kept = int(re.search(r"Interrupted: (\d+) image", page.inner_text("#txt2img_infotext")).group(1))
    assert 1 <= kept < 100, "Interrupt should stop the 100-image job early, keeping what was made"
    page.screenshot(path=str(artifacts / "txt2img_interrupted.png"), full_page=True)

    # -- send the image to img2img: image and parameters arrive, the tab is shown ------------
    page.click("#txt2img_send_to_img2img")
    # Gradio renders a tab's contents when it is first shown, hence the optional chaining.
    page.wait_for_function(
        "document.querySelector('#img2img_prompt textarea')?.value.includes('red circle')", timeout=30_000
    )
    page.wait_for_selector("#img2img_image img", timeout=30_000)
    assert page.locator("#img2img_steps input[type=number]").input_value() == "40"
    assert page.locator("#img2img_width input[type=number]").input_value() == "64"
    page.screenshot(path=str(artifacts / "img2img_after_send.png"), full_page=True)

    # -- img2img on the sent image ---------------------------------------------------------
    set_slider(page, "img2img_steps", 8)
    page.locator("#img2img_prompt textarea").press("Control+Enter")  # A1111's shortcut for Generate
    page.wait_for_function(
        "document.querySelector('#img2img_infotext').innerText.includes('Denoising strength: 0.75')",
        timeout=GENERATION_TIMEOUT_MS,
    )
    assert "Steps: 8" in page.inner_text("#img2img_infotext")
    assert list((webui_server.data_dir / "outputs" / "img2img-images").rglob("*.png"))
    page.wait_for_selector("#img2img_gallery img", timeout=30_000)
    page.screenshot(path=str(artifacts / "img2img_generated.png"), full_page=True)

    # -- inpaint: send the result to the canvas, paint a stroke, generate ------------------
    page.click("#img2img_send_to_inpaint")
    draw_stroke(page, "img2img_inpaint_editor")
    page.click("#img2img_generate")
    page.wait_for_function(
        "document.querySelector('#img2img_infotext').innerText.includes('Mask blur: 4')", timeout=GENERATION_TIMEOUT_MS
    )
    assert "Masked content: original" in page.inner_text("#img2img_infotext")
    page.wait_for_selector("#img2img_gallery img", timeout=30_000)
    page.screenshot(path=str(artifacts / "inpaint_generated.png"), full_page=True)

    assert outside == [], f"the page reached outside the machine: {outside[:5]}"
    page.close()


def test_png_info_send_to_txt2img_and_extras(webui_server, browser, artifacts):
    page = open_page(webui_server, browser)
    # An image the way A1111 writes one: PNG with its infotext in the "parameters" chunk.
    image_path = webui_server.data_dir.parent / "pasted.png"
    _write_png_with_parameters(
        image_path,
        "a small green square at the top left\nNegative prompt: red\n"
        "Steps: 9, Sampler: Euler a, Schedule type: Karras, CFG scale: 4.5, Seed: 777, Size: 64x64",
    )

    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(image_path))
    page.wait_for_function("document.querySelector('#pnginfo_html')?.innerText.includes('Seed: 777')", timeout=60_000)
    page.screenshot(path=str(artifacts / "pnginfo.png"), full_page=True)
    page.click("#pnginfo_send_to_txt2img")
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea').value.includes('green square')", timeout=30_000
    )
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == "red"
    assert page.locator("#txt2img_steps input[type=number]").input_value() == "9"
    assert page.locator("#txt2img_cfg_scale input[type=number]").input_value() == "4.5"
    assert page.locator("#txt2img_seed input").input_value() == "777"
    assert "Euler a" in page.locator("#txt2img_sampling input").input_value()
    assert "Karras" in page.locator("#txt2img_scheduler input").input_value()

    page.get_by_role("tab", name="PNG Info").click()
    page.click("#pnginfo_send_to_extras")
    page.wait_for_selector("#extras_image img", timeout=30_000)
    page.click("#extras_generate")
    page.wait_for_function(
        "document.querySelector('#extras_info')?.innerText.includes('Postprocess upscale by: 2')",
        timeout=GENERATION_TIMEOUT_MS,
    )
    assert page.locator("#extras_gallery img").count() >= 1
    page.screenshot(path=str(artifacts / "extras.png"), full_page=True)
    page.close()


def test_extra_network_cards_insert_into_the_prompt(webui_server, browser, artifacts):
    page = open_page(webui_server, browser)
    page.fill("#txt2img_prompt textarea", "a cat")
    page.get_by_role("tab", name="Extra Networks").click()
    page.wait_for_selector("#extra_networks_lora_cards img", timeout=30_000)
    page.screenshot(path=str(artifacts / "extra_networks.png"), full_page=True)
    page.locator("#extra_networks_lora_cards img").first.click()
    page.get_by_role("tab", name="txt2img").click()
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea')?.value === 'a cat, <lora:inkwash:1>'", timeout=30_000
    )
    page.get_by_role("tab", name="Extra Networks").click()
    page.get_by_role("tab", name="Textual Inversion").click()
    page.wait_for_selector("#extra_networks_embedding_cards img", timeout=30_000)
    page.locator("#extra_networks_embedding_cards img").first.click()
    page.get_by_role("tab", name="txt2img").click()
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea')?.value === 'a cat, <lora:inkwash:1>, sharp-lines'",
        timeout=30_000,
    )
    page.close()


def _write_png_with_parameters(path, infotext: str) -> None:
    from PIL import Image, PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", infotext)
    Image.new("RGB", (64, 64), (20, 160, 40)).save(path, pnginfo=meta)


def choose_checkpoint(page, name: str) -> None:
    """Pick a checkpoint in the top bar's dropdown, as a user does."""
    page.locator("#setting_sd_model_checkpoint input").first.click()
    page.get_by_role("option", name=name, exact=True).click()


def wait_for_size(page, kind: str, size: int) -> None:
    for field in ("width", "height"):
        page.wait_for_function(
            f"document.querySelector('#{kind}_{field} input[type=number]')?.value === '{size}'", timeout=30_000
        )


def test_width_and_height_follow_the_checkpoint(webui_server, browser, write_wide_checkpoint, artifacts):
    page = open_page(webui_server, browser)
    # The page opens on the bundled model, which draws 64x64 (A1111's 512 would be slow and off its training).
    assert page.locator("#txt2img_width input[type=number]").input_value() == "64"
    assert page.locator("#txt2img_height input[type=number]").input_value() == "64"

    # A second checkpoint, 128x128 native, appears after Refresh; choosing it sets the sizes to its own.
    write_wide_checkpoint(webui_server.data_dir / "models" / "Stable-diffusion")
    request = urllib.request.Request(  # keep the bundled model chosen while the list grows
        webui_server.url + "sdapi/v1/options",
        data=json.dumps({"sd_model_checkpoint": "sdstudio-tiny"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=120).close()
    page.click("#refresh_sd_model_checkpoint")
    choose_checkpoint(page, "wide-tiny.safetensors")
    wait_for_size(page, "txt2img", 128)
    page.get_by_role("tab", name="img2img").click()
    wait_for_size(page, "img2img", 128)
    page.screenshot(path=str(artifacts / "checkpoint_native_size.png"), full_page=True)

    choose_checkpoint(page, "sdstudio-tiny.safetensors")
    wait_for_size(page, "img2img", 64)
    page.get_by_role("tab", name="txt2img").click()
    wait_for_size(page, "txt2img", 64)
    page.close()


def test_settings_tab_shows_labelled_sections(webui_server, browser, artifacts):
    page = open_page(webui_server, browser)
    page.get_by_role("tab", name="Settings").click()
    page.wait_for_selector("#settings_submit", timeout=30_000)
    text = page.inner_text("#tab_settings")
    for heading in ("Saving images/grids", "Paths for saving", "Stable Diffusion", "Sampler parameters"):
        assert heading in text
    for heading in ("Face restoration", "Upscaling", "User interface", "Live previews"):
        assert heading in text
    assert "Clip skip" in text and "CLIP_stop_at_last_layers" not in text  # the open section: labels, not keys
    page.get_by_text("Saving images/grids", exact=True).click()
    page.get_by_text("Always save all generated images").wait_for(timeout=30_000)
    assert "samples_save" not in page.inner_text("#tab_settings")
    page.screenshot(path=str(artifacts / "settings.png"), full_page=True)
    page.close()


def test_sketch_tab_generates_from_the_sketched_image(webui_server, browser, artifacts):
    from PIL import Image

    page = open_page(webui_server, browser)
    page.get_by_role("tab", name="img2img").click()
    page.get_by_role("tab", name="Sketch", exact=True).click()
    image_path = webui_server.data_dir.parent / "to-sketch.png"
    Image.new("RGB", (64, 64), (40, 90, 200)).save(image_path)
    page.locator("#img2img_sketch input[type=file]").set_input_files(str(image_path))
    draw_stroke(page, "img2img_sketch")
    page.fill("#img2img_prompt textarea", "a white stroke across the sky")
    set_slider(page, "img2img_steps", 4)
    page.click("#img2img_generate")
    page.wait_for_function(
        "document.querySelector('#img2img_infotext').innerText.includes('Denoising strength')",
        timeout=GENERATION_TIMEOUT_MS,
    )
    info = page.inner_text("#img2img_infotext")
    assert "a white stroke across the sky" in info and "Mask blur" not in info  # redrawn whole, as img2img
    page.screenshot(path=str(artifacts / "sketch_generated.png"), full_page=True)
    page.close()


def test_log_in_on_the_form_with_every_route_guarded(guarded_webui_server, browser):
    """With --auth the login form still works: everything it loads before a login is served to it."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    refused = []
    page.on("response", lambda answer: refused.append(answer.url) if answer.status >= 400 else None)
    page.goto(guarded_webui_server.url)
    page.wait_for_selector("input[type=password]", timeout=60_000)
    assert page.locator("#txt2img_prompt").count() == 0
    page.fill("input[type=text]", "ann")
    page.fill("input[type=password]", "secret")
    page.keyboard.press("Enter")
    page.wait_for_selector("#txt2img_prompt textarea", timeout=60_000)
    assert refused == [], refused
    page.close()


# -- scripts and extensions (the server has the sample extension "twice": the job twice, seed + offset) --

SAMPLE_EXTENSIONS = Path(__file__).resolve().parents[1] / "extensions" / "sample_extensions"


def test_a_script_chosen_in_the_dropdown_runs_with_its_slider(scripts_webui_server, browser, artifacts):
    page = open_page(scripts_webui_server, browser)
    page.fill("#txt2img_prompt textarea", "a red circle")
    set_slider(page, "txt2img_width", 64)
    set_slider(page, "txt2img_height", 64)
    set_slider(page, "txt2img_steps", 3)
    page.locator("#txt2img_seed input").fill("1234")

    assert not page.locator("#txt2img_script_twice_0").is_visible()  # no script chosen: no script controls
    page.locator("#txt2img_script_list input").click()
    page.get_by_role("option", name="Twice", exact=True).click()
    page.wait_for_selector("#txt2img_script_twice_0 input[type=number]", state="visible", timeout=30_000)
    set_slider(page, "txt2img_script_twice_0", 7)
    page.click("#txt2img_generate")
    page.wait_for_function(
        "document.querySelector('#txt2img_infotext').innerText.includes('Done: 2 image(s)')",
        timeout=GENERATION_TIMEOUT_MS,
    )
    thumbnails = page.locator("#txt2img_gallery .thumbnail-item")
    assert thumbnails.count() == 2
    assert "Seed: 1234," in page.inner_text("#txt2img_infotext")  # the first image's infotext
    page.screenshot(path=str(artifacts / "script_twice.png"), full_page=True)
    thumbnails.nth(1).click()
    page.wait_for_function(
        "document.querySelector('#txt2img_infotext').innerText.includes('Seed: 1241,')", timeout=30_000
    )
    page.close()


def test_an_extension_installed_in_the_extensions_tab_appears_in_its_list(scripts_webui_server, browser, artifacts):
    page = open_page(scripts_webui_server, browser)
    page.get_by_role("tab", name="Extensions", exact=True).click()
    page.wait_for_function("document.querySelector('#extensions_table')?.innerText.includes('twice')", timeout=30_000)
    assert "probe" not in page.inner_text("#extensions_table")
    page.get_by_role("tab", name="Install from path or URL", exact=True).click()
    page.fill("#extensions_install_source textarea", str(SAMPLE_EXTENSIONS / "probe"))
    page.click("#extensions_install")
    page.wait_for_function(
        "document.querySelector('#extensions_install_result').innerText.includes('Installed probe')", timeout=60_000
    )
    page.get_by_role("tab", name="Installed", exact=True).click()
    page.wait_for_function("document.querySelector('#extensions_table')?.innerText.includes('Probe')", timeout=30_000)
    assert (scripts_webui_server.data_dir / "extensions" / "probe" / "scripts").is_dir()
    page.screenshot(path=str(artifacts / "extensions_installed.png"), full_page=True)
    page.close()


def test_the_page_in_zh_cn_with_an_extensions_script_and_style(localized_webui_server, browser, artifacts):
    page = open_page(localized_webui_server, browser)
    page.wait_for_function("document.querySelector('#txt2img_generate').innerText.trim() === '生成'", timeout=30_000)
    assert page.get_attribute("#txt2img_prompt textarea", "placeholder") == "提示词（按 Ctrl+Enter 生成）"
    assert page.get_by_role("tab", name="文生图", exact=True).count() == 1
    assert "采样方法" in page.inner_text("#txt2img_sampling")
    # The extension's javascript/mark.js ran (A1111's onUiLoaded) and its style.css applies.
    page.wait_for_function("document.body.dataset.pageFiles === 'loaded'", timeout=30_000)
    spacing = page.evaluate("getComputedStyle(document.querySelector('#txt2img_generate')).letterSpacing")
    assert spacing == "3px"
    page.screenshot(path=str(artifacts / "localized_zh_cn.png"), full_page=True)
    page.close()


def test_xyz_plot_in_the_browser_gives_the_annotated_grid_and_its_cells(scripts_webui_server, browser, artifacts):
    page = open_page(scripts_webui_server, browser)
    page.fill("#txt2img_prompt textarea", "a red circle")
    set_slider(page, "txt2img_width", 64)
    set_slider(page, "txt2img_height", 64)
    set_slider(page, "txt2img_steps", 2)
    page.locator("#txt2img_script_list input").click()
    page.get_by_role("option", name="X/Y/Z plot", exact=True).click()
    xyz = "txt2img_script_x_y_z_plot"
    page.wait_for_selector(f"#{xyz}_1 textarea", state="visible", timeout=30_000)
    # X type defaults to Seed (A1111); Y: Steps.
    page.fill(f"#{xyz}_1 textarea", "11, 12, 13")
    page.locator(f"#{xyz}_3 input").click()
    page.get_by_role("option", name="Steps", exact=True).click()
    page.fill(f"#{xyz}_4 textarea", "2, 3")
    page.locator(f"#{xyz}_10 input").check()  # "Include Sub Images": the cells too, not only the grid
    page.click("#txt2img_generate")
    try:
        page.wait_for_function(
            "document.querySelector('#txt2img_infotext').innerText.includes('Done: 6 image(s)')",
            timeout=GENERATION_TIMEOUT_MS,
        )
    finally:
        page.screenshot(path=str(artifacts / "xyz_plot.png"), full_page=True)
    thumbnails = page.locator("#txt2img_gallery .thumbnail-item")
    assert thumbnails.count() == 7  # the annotated grid, then the 3 × 2 cells
    thumbnails.nth(6).click()  # the last cell: seed 13, 3 steps
    page.wait_for_function(
        "(t => t.includes('Seed: 13,') && t.includes('Steps: 3,'))"
        "(document.querySelector('#txt2img_infotext').innerText)",
        timeout=30_000,
    )
    page.close()
