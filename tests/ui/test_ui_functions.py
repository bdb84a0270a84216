"""The web UI's functions without a browser: paste mapping, requests, masks, counters,
settings, extra-network cards, PNG info, progress, and building the whole page."""

from __future__ import annotations

import json
import threading

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.app import open_app
from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.engine.job_queue import JobQueue
from sdstudio.errors import InvalidRequest
from sdstudio.ui.backend import UiBackend

HIRES_INFOTEXT = (
    "a red circle, blue background\n"
    "Negative prompt: blurry, text\n"
    "Steps: 12, Sampler: Euler a, Schedule type: Karras, CFG scale: 5.5, Seed: 42, Size: 64x96, "
    "Model hash: 0123456789, Model: tiny, Denoising strength: 0.45, Hires upscale: 1.5, "
    "Hires steps: 3, Hires upscaler: Latent (nearest), "
    "Variation seed: 7, Variation seed strength: 0.25, Version: sdstudio"
)


def page(host: str = "127.0.0.1"):
    """What Gradio hands an event function that asks for the request: a page opened from `host`."""
    from sdstudio.ui.webui import offline_environment

    offline_environment()
    import gradio as gr

    return gr.Request(client={"host": host})


@pytest.fixture
def backend(tmp_path):
    paths = DataPaths(tmp_path / "data").ensure()
    return UiBackend(settings_store=SettingsStore(paths), paths=paths)


# -- paste (send to txt2img / img2img) -------------------------------------------------------


def test_paste_to_txt2img_fills_every_field_including_hires():
    from sdstudio.ui.paste import fields_from_infotext

    fields = fields_from_infotext(HIRES_INFOTEXT, "txt2img")
    assert fields["prompt"] == "a red circle, blue background"
    assert fields["negative_prompt"] == "blurry, text"
    assert (fields["steps"], fields["sampler_name"], fields["scheduler"]) == (12, "Euler a", "Karras")
    assert (fields["cfg_scale"], fields["seed"], fields["width"], fields["height"]) == (5.5, 42, 64, 96)
    assert (fields["subseed"], fields["subseed_strength"]) == (7, 0.25)
    assert fields["enable_hr"] is True
    assert (fields["hr_scale"], fields["hr_second_pass_steps"], fields["hr_upscaler"]) == (1.5, 3, "Latent (nearest)")
    assert fields["denoising_strength"] == 0.45


def test_paste_to_img2img_takes_denoising_but_no_hires_fields():
    from sdstudio.ui.paste import fields_from_infotext

    fields = fields_from_infotext(HIRES_INFOTEXT, "img2img")
    assert fields["denoising_strength"] == 0.45
    assert not any(name.startswith("hr_") or name == "enable_hr" for name in fields)
    assert fields["seed"] == 42


def test_paste_values_follow_component_order_and_skip_what_is_missing():
    from sdstudio.ui.paste import fields_from_infotext, values_for_components

    fields = fields_from_infotext("a cat\nSteps: 9, Sampler: Euler, Seed: 3, Size: 64x64", "txt2img")
    skip = object()
    values = values_for_components(fields, ["prompt", "negative_prompt", "steps", "hr_scale", "seed"], skip)
    assert values == ["a cat", "", 9, skip, 3]


def test_paste_of_text_without_parameters_changes_nothing():
    from sdstudio.ui.paste import fields_from_infotext

    assert fields_from_infotext("", "txt2img") == {}


def test_match_checkpoint_by_name_then_hash():
    from sdstudio.ui.paste import match_checkpoint

    titles = ["sd15/realistic.safetensors [abcdef1234]", "tiny.safetensors [0123456789]"]
    assert match_checkpoint({"sd_model_checkpoint": "realistic"}, titles) == titles[0]
    assert match_checkpoint({"sd_model_hash": "0123456789"}, titles) == titles[1]
    assert match_checkpoint({"sd_model_checkpoint": "missing"}, titles) is None


# -- requests from the tabs' values ------------------------------------------------------------


def test_txt2img_request_from_ui_values(backend):
    from sdstudio.ui.txt2img import make_txt2img_request

    values = {
        "prompt": "a square",
        "negative_prompt": "",
        "styles": [],
        "sampler_name": "Euler",
        "scheduler": "Automatic",
        "steps": 8.0,
        "width": 64.0,
        "height": 64.0,
        "n_iter": 2.0,
        "batch_size": 1.0,
        "cfg_scale": 6.5,
        "seed": 5,
        "subseed": -1,
        "subseed_strength": 0.0,
        "seed_resize_from_w": 0,
        "seed_resize_from_h": 0,
        "enable_hr": False,
        "hr_scale": 2.0,
        "hr_upscaler": "Latent",
        "hr_second_pass_steps": 0,
        "denoising_strength": 0.7,
        "hr_sampler_name": "Use same sampler",
        "hr_scheduler": "Use same scheduler",
    }
    request = make_txt2img_request(backend, values)
    assert (request.steps, request.width, request.n_iter, request.seed) == (8, 64, 2, 5)
    assert request.enable_hr is False
    assert request.seed_resize_from_w == -1
    assert request.do_not_save_samples is False  # samples_save is on by default


def test_refiner_and_hires_checkpoint_controls_become_request_fields_and_paste_back(backend):
    from sdstudio.ui.paste import fields_from_infotext
    from sdstudio.ui.txt2img import make_txt2img_request

    base = {"prompt": "x", "width": 64, "height": 64, "refiner_switch_at": 0.8}
    unused = make_txt2img_request(backend, {**base, "refiner_checkpoint": "None"})
    assert unused.refiner_checkpoint is None
    chosen = {**base, "refiner_checkpoint": "second.safetensors", "refiner_switch_at": 0.6, "enable_hr": True}
    request = make_txt2img_request(backend, {**chosen, "hr_checkpoint_name": "Use same checkpoint"})
    assert (request.refiner_checkpoint, request.refiner_switch_at, request.hr_checkpoint_name) == (
        "second.safetensors",
        0.6,
        None,
    )
    assert make_txt2img_request(backend, {**chosen, "hr_checkpoint_name": "other"}).hr_checkpoint_name == "other"
    pasted = fields_from_infotext(
        "a cat\nSteps: 4, Seed: 1, Size: 64x64, Denoising strength: 0.5, Hires upscale: 2, "
        "Hires checkpoint: other [12ab], Refiner: second [34cd], Refiner switch at: 0.6",
        "txt2img",
    )
    assert (pasted["hr_checkpoint_name"], pasted["refiner_checkpoint"], pasted["refiner_switch_at"]) == (
        "other [12ab]",
        "second [34cd]",
        0.6,
    )


def test_ui_requests_keep_to_the_limit_settings(backend):
    from sdstudio.ui.img2img import make_img2img_request
    from sdstudio.ui.txt2img import make_txt2img_request

    backend.settings_store.change({"limit_steps": 30})
    with pytest.raises(InvalidRequest) as err:
        make_txt2img_request(backend, {"prompt": "x", "width": 64, "height": 64, "steps": 31})
    assert err.value.field == "steps" and "limit_steps" in str(err.value)
    image = Image.new("RGB", (64, 64))
    values = {"prompt": "x", "width": 64, "height": 64, "steps": 31}
    with pytest.raises(InvalidRequest) as err:
        make_img2img_request(backend, values, "img2img", image, None, None, None)
    assert err.value.field == "steps"


def test_txt2img_request_names_the_bad_field(backend):
    from sdstudio.ui.txt2img import make_txt2img_request

    with pytest.raises(InvalidRequest) as err:
        make_txt2img_request(backend, {"prompt": "x", "width": 100, "height": 64})
    assert err.value.field == "width"


def test_img2img_request_needs_an_image(backend):
    from sdstudio.ui.img2img import make_img2img_request

    with pytest.raises(InvalidRequest) as err:
        make_img2img_request(backend, {"prompt": "x"}, "img2img", None, None, None, None)
    assert err.value.field == "init_images"


def test_inpaint_mask_is_white_where_painted():
    from sdstudio.ui.img2img import mask_from_editor

    background = Image.new("RGBA", (32, 32), (10, 20, 30, 255))
    layer = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (8, 8, 16, 16))
    image, mask = mask_from_editor({"background": background, "layers": [layer], "composite": background})
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (10, 20, 30)
    assert mask.getpixel((10, 10)) == 255 and mask.getpixel((0, 0)) == 0
    assert mask.getbbox() == (8, 8, 16, 16)


def test_inpaint_upload_request_carries_the_mask(backend):
    from sdstudio.ui.img2img import make_img2img_request

    image = Image.new("RGB", (64, 64), "red")
    mask = Image.new("L", (64, 64), 0)
    values = {
        "prompt": "x",
        "width": 64,
        "height": 64,
        "steps": 4,
        "mask_blur": 2,
        "inpainting_fill": 1,
        "inpaint_full_res": 0,
        "inpaint_full_res_padding": 32,
        "inpainting_mask_invert": 0,
        "resize_mode": 0,
        "denoising_strength": 0.5,
    }
    request = make_img2img_request(backend, values, "inpaint_upload", None, None, image, mask)
    assert request.mask is not None and request.inpaint_full_res is False and request.mask_blur_x == 2


# -- token counter -----------------------------------------------------------------------------


def test_token_counter_counts_words_and_grows_by_chunks(backend):
    assert backend.count_tokens("a red circle").text == "3/75"
    assert backend.count_tokens("").text == "0/75"
    long_prompt = ", ".join(["red circle"] * 40)  # 40 * 2 words + 39 commas = 119 tokens
    count = backend.count_tokens(long_prompt)
    assert count.limit == 150 and count.used > 75


def test_token_counter_ignores_lora_tags_and_weights(backend):
    assert backend.count_tokens("(a red circle:1.3) <lora:thing:0.8>").text == "3/75"


# -- settings ----------------------------------------------------------------------------------


def test_apply_settings_saves_config_json(backend):
    changed = backend.apply_settings({"jpeg_quality": 95, "samples_format": "png"})
    assert changed == ["jpeg_quality"]
    saved = json.loads(backend.paths.config_file.read_text())
    assert saved["jpeg_quality"] == 95


def test_apply_settings_rejects_a_bad_value_naming_the_option(backend):
    with pytest.raises(InvalidRequest) as err:
        backend.apply_settings({"jpeg_quality": "very good"})
    assert err.value.field == "jpeg_quality"
    assert not backend.paths.config_file.exists()


def test_settings_layout_lists_every_option_once():
    from sdstudio.ui.settings import settings_layout

    settings = Settings.model_validate({"some_extension_option": True})
    layout = settings_layout(settings)
    names = [name for _title, names in layout for name in names]
    assert len(names) == len(set(names))
    assert set(Settings.model_fields) <= set(names)
    assert "some_extension_option" in names


# -- extra networks ----------------------------------------------------------------------------


def test_network_cards_with_previews_and_prompt_text(backend):
    lora_dir = backend.paths.folder("lora")
    (lora_dir / "style").mkdir()
    (lora_dir / "style" / "ink.safetensors").write_bytes(b"x")
    Image.new("RGB", (8, 8)).save(lora_dir / "style" / "ink.preview.png")
    (backend.paths.folder("embedding") / "bad-hands.pt").write_bytes(b"x")
    loras = backend.network_cards("lora")
    assert [(c.name, c.prompt_text) for c in loras] == [("ink", "<lora:ink:1>")]
    assert loras[0].preview.name == "ink.preview.png"
    embeddings = backend.network_cards("embedding")
    assert [(c.name, c.prompt_text, c.preview) for c in embeddings] == [("bad-hands", "bad-hands", None)]
    (backend.paths.folder("hypernetwork") / "anime.pt").write_bytes(b"x")
    (backend.paths.folder("hypernetwork") / "anime.png").write_bytes(b"png")
    hypernetworks = backend.network_cards("hypernetwork")
    assert [(c.name, c.prompt_text, c.preview.name) for c in hypernetworks] == [
        ("anime", "<hypernet:anime:1>", "anime.png")
    ]


def test_clicking_a_card_adds_then_removes_its_text():
    from sdstudio.ui.extra_networks import insert_into_prompt

    prompt = insert_into_prompt("a cat", "<lora:ink:1>")
    assert prompt == "a cat, <lora:ink:1>"
    assert insert_into_prompt(prompt, "<lora:ink:1>") == "a cat"
    assert insert_into_prompt("", "bad-hands") == "bad-hands"


# -- PNG info ----------------------------------------------------------------------------------


def test_png_info_reads_parameters_and_other_chunks(tmp_path):
    from sdstudio.ui.pnginfo import read_image_info

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", HIRES_INFOTEXT)
    meta.add_text("postprocessing", "Postprocess upscale by: 2")
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=meta)
    infotext, html = read_image_info(str(path))
    assert infotext == HIRES_INFOTEXT
    assert "Seed: 42" in html and "postprocessing" in html
    empty = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(empty)
    assert read_image_info(str(empty))[0] == ""


# -- progress through the shared job queue -----------------------------------------------------


def test_ui_work_runs_on_the_shared_queue_and_reports_progress():
    from sdstudio.engine.job_context import ProgressEvent
    from sdstudio.engine.job_queue import JobQueue, submit_generation
    from sdstudio.ui.jobs import follow_job

    queue = JobQueue()
    queue.start()
    try:
        release = threading.Event()
        seen = {}

        def work(control):
            control.on_progress(ProgressEvent(job_no=0, job_count=2, step=3, steps=10, eta_seconds=None))
            release.wait(10)
            seen["current"] = queue.current
            return "done"

        job = submit_generation(queue, "txt2img", work)
        snapshots = follow_job(queue, job, poll=0.05)
        first = next(snapshots)
        while first.steps == 0:
            first = next(snapshots)
        assert (first.step, first.steps, first.job_count, first.position) == (3, 10, 2, 0)
        assert "step 3/10" in first.html() and "image batch 1/2" in first.html()
        release.set()
        list(snapshots)
        assert job.future.result() == "done" and seen["current"] is job
    finally:
        queue.stop()


def test_progress_html_shows_queue_position_while_waiting():
    from sdstudio.ui.jobs import ProgressSnapshot, progress_html

    waiting = ProgressSnapshot(position=3, fraction=0, eta_seconds=None, step=0, steps=0, job_no=0, job_count=1)
    assert "2 job(s) ahead" in progress_html(waiting)
    running = ProgressSnapshot(position=0, fraction=0.5, eta_seconds=75, step=5, steps=10, job_no=0, job_count=1)
    assert "50%" in progress_html(running) and "ETA 1m 15s" in progress_html(running)


# -- the whole page ----------------------------------------------------------------------------


def test_build_ui_has_every_tab_and_the_generation_controls(backend):
    from sdstudio.engine.job_queue import JobQueue
    from sdstudio.ui.webui import TAB_IDS, build_ui

    blocks = build_ui(backend, JobQueue())
    config = blocks.get_config_file()
    elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    for tab in TAB_IDS:
        assert f"tab_{tab}" in elem_ids
    for kind in ("txt2img", "img2img"):
        for name in (
            "prompt",
            "neg_prompt",
            "generate",
            "interrupt",
            "skip",
            "sampling",
            "scheduler",
            "steps",
            "width",
            "height",
            "batch_count",
            "batch_size",
            "cfg_scale",
            "seed",
            "subseed",
            "gallery",
            "infotext",
            "progress",
            "token_counter",
            "styles",
            "send_to_img2img",
            "send_to_inpaint",
            "send_to_extras",
        ):
            assert f"{kind}_{name}" in elem_ids, f"{kind}_{name} missing"
    assert "txt2img_enable_hr" in elem_ids and "img2img_inpaint_editor" in elem_ids
    assert "setting_sd_model_checkpoint" in elem_ids and "setting_jpeg_quality" in elem_ids


def test_auth_keeps_the_ui_closed_until_login():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sdstudio.ui.webui import mount_ui, offline_environment

    offline_environment()
    import gradio as gr

    with gr.Blocks() as blocks:
        gr.Textbox(elem_id="anything")
    api = FastAPI()
    mount_ui(api, blocks, auth=[("ann", "secret")])
    with TestClient(api) as client:
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
        assert client.post("/login", data={"username": "ann", "password": "secret"}).status_code == 200
        assert client.get("/config").status_code == 200


def test_webui_command_line(capsys):
    from sdstudio.cli.main import build_parser, main

    args = build_parser().parse_args(["webui", "--listen", "--port", "7999", "--api", "--auth", "ann:secret"])
    assert (args.listen, args.port, args.api, args.auth) == (True, 7999, True, "ann:secret")
    defaults = build_parser().parse_args(["webui"])
    assert (defaults.listen, defaults.port, defaults.api, defaults.auth) == (False, 7860, False, None)
    assert main(["webui", "--auth", "no-colon"]) == 2
    assert "expected user:password" in capsys.readouterr().err


def test_settings_apply_sends_only_what_changed_on_the_page(backend):
    """An option changed elsewhere (the checkpoint dropdown) survives Apply of another one."""
    import gradio as gr

    from sdstudio.ui.settings import build_settings_tab

    with gr.Blocks() as blocks:
        build_settings_tab(backend)
    apply = next(fn for fn in blocks.fns.values() if fn.name == "on_apply")
    inputs = apply.inputs
    names = [component.elem_id.removeprefix("setting_") for component in inputs[1:]]
    shown = {n: getattr(backend.settings, n) for n in names}
    backend.settings_store.change({"sd_model_checkpoint": "other.safetensors"})  # changed outside the Settings page
    values = [shown[n] if n != "jpeg_quality" else 90 for n in names]
    message, _now = apply.fn(page(), shown, *values)
    assert "jpeg_quality" in message
    assert backend.settings.sd_model_checkpoint == "other.safetensors"
    assert json.loads(backend.paths.config_file.read_text())["jpeg_quality"] == 90


def test_checkpoint_dropdown_lists_model_files_and_shows_the_selected_one(backend):
    folder = backend.paths.folder("checkpoint")
    assert backend.checkpoint_titles() == [] and backend.current_checkpoint() is None
    (folder / "sd15").mkdir()
    (folder / "sd15" / "photo.safetensors").write_bytes(b"x")
    (folder / "anime.ckpt").write_bytes(b"x")
    (folder / "notes.txt").write_text("not a model")
    assert backend.refresh_checkpoints() == ["anime.ckpt", "sd15/photo.safetensors"]
    assert backend.current_checkpoint() == "anime.ckpt"
    backend.settings_store.change({"sd_model_checkpoint": "sd15/photo.safetensors"})
    assert backend.current_checkpoint() == "sd15/photo.safetensors"


def test_missing_checkpoint_error_says_where_to_put_one(backend):
    from sdstudio.errors import NotFound
    from sdstudio.ui.generation import explain_error

    message = explain_error(NotFound("no checkpoint selected: pass --ckpt FILE"), backend)
    assert str(backend.paths.folder("checkpoint")) in message and "--ckpt" not in message


def test_progress_before_the_first_step_says_it_is_starting():
    from sdstudio.ui.jobs import ProgressSnapshot, progress_html

    starting = ProgressSnapshot(position=0, fraction=0, eta_seconds=None, step=0, steps=0, job_no=0, job_count=1)
    assert "Starting" in progress_html(starting)


def test_backend_over_the_model_registry(backend):
    from bad_files import write_good_safetensors

    from sdstudio.models.registry import ModelRegistry

    backend.registry = ModelRegistry(backend.paths)
    write_good_safetensors(backend.paths.folder("checkpoint") / "b.safetensors")  # a broken file is not offered
    (backend.paths.folder("checkpoint") / "a.ckpt").write_bytes(b"x")
    titles = backend.checkpoint_titles()
    assert titles[:2] == ["a.ckpt", "b.safetensors"]
    backend.settings_store.change({"sd_model_checkpoint": "b"})  # A1111 configs may hold a stem or a title
    assert backend.current_checkpoint() == "b.safetensors"
    (backend.paths.folder("lora") / "ink.safetensors").write_bytes(b"x")
    Image.new("RGB", (8, 8)).save(backend.paths.folder("lora") / "ink.png")
    cards = backend.network_cards("lora")
    assert [(c.name, c.prompt_text, c.preview.name) for c in cards] == [("ink", "<lora:ink:1>", "ink.png")]


def test_gallery_selection_maps_to_the_image_infotext_and_seed_past_the_grid():
    from sdstudio.ui.generation import infotext_for_index, seed_for_index

    info = {"infotexts": ["first", "second"], "index_of_first_image": 1, "seeds": [10, 11], "subseeds": [5, 6]}
    assert infotext_for_index(info, 0) == "first"  # the grid shows the first image's parameters
    assert infotext_for_index(info, 2) == "second"
    assert seed_for_index(info, 2) == 11 and seed_for_index(info, 0) == 10
    assert seed_for_index(info, 1, "subseeds") == 5
    assert infotext_for_index({}, 0) == "" and seed_for_index({}, 0) is None


def test_styles_are_read_again_on_reload(backend):
    from sdstudio.prompts.styles import StyleDatabase

    backend.styles = StyleDatabase(backend.paths.styles_file)
    assert backend.style_names() == []
    backend.paths.styles_file.write_text("name,prompt,negative_prompt\nInk,{prompt} in ink,color\n", encoding="utf-8")
    assert backend.style_names() == []  # read once, like A1111, until reloaded
    assert backend.style_names(reload=True) == ["Ink"]


# -- checkpoint native size --------------------------------------------------------------------


def test_width_and_height_follow_the_checkpoint(data_dir, write_wide_checkpoint, running_queue):
    from sdstudio.ui.webui import build_ui

    backend = UiBackend.from_app(open_app(data_dir))
    assert backend.native_size() == 64  # only the bundled tiny model: 64x64
    blocks = build_ui(backend, running_queue)
    sizes = {
        c["props"]["elem_id"]: c["props"]["value"]
        for c in blocks.get_config_file()["components"]
        if c.get("props", {}).get("elem_id") in ("txt2img_width", "txt2img_height", "img2img_width", "img2img_height")
    }
    assert sizes == {"txt2img_width": 64, "txt2img_height": 64, "img2img_width": 64, "img2img_height": 64}

    write_wide_checkpoint(backend.paths.folder("checkpoint"))
    on_checkpoint = next(fn for fn in blocks.fns.values() if fn.name == "on_checkpoint")
    assert on_checkpoint.fn(page(), "wide-tiny.safetensors")[1:] == [128, 128, 128, 128]
    assert backend.current_checkpoint() == "wide-tiny.safetensors"
    assert on_checkpoint.fn(page(), "sdstudio-tiny.safetensors")[1:] == [64, 64, 64, 64]
    assert backend.native_size("typed-but-missing") is None  # the sizes stay as they are


# -- sketch and inpaint sketch -----------------------------------------------------------------


def _sketched_canvas():
    """A red image with a blue square stroke from (8, 8) to (16, 16), as the ImageEditor sends it."""
    background = Image.new("RGBA", (32, 32), (200, 0, 0, 255))
    layer = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    layer.paste((0, 0, 255, 255), (8, 8, 16, 16))
    return {"background": background, "layers": [layer], "composite": background}


def test_sketch_strokes_are_painted_into_the_init_image():
    from sdstudio.ui.sketch import compose_sketch, editor_layers

    sketched = compose_sketch(*editor_layers(_sketched_canvas(), "sketch"))
    assert sketched.mode == "RGB" and sketched.size == (32, 32)
    assert sketched.getpixel((10, 10)) == (0, 0, 255) and sketched.getpixel((0, 0)) == (200, 0, 0)


def test_inpaint_sketch_strokes_are_the_new_colours_and_the_mask():
    from sdstudio.ui.sketch import compose_inpaint_sketch, editor_layers

    image, strokes = editor_layers(_sketched_canvas(), "inpaint sketch")
    painted, mask = compose_inpaint_sketch(image, strokes)
    assert painted.getpixel((10, 10)) == (0, 0, 255) and painted.getpixel((0, 0)) == (200, 0, 0)
    assert mask.mode == "L" and mask.getbbox() == (8, 8, 16, 16) and mask.getpixel((10, 10)) == 255
    # Mask blur softens the painting into the original (A1111), far pixels stay the original's.
    blurred, _ = compose_inpaint_sketch(image, strokes, mask_blur=2)
    red, _green, blue = blurred.getpixel((8, 12))
    assert 0 < blue < 255 and 0 < red < 200 and blurred.getpixel((0, 0)) == (200, 0, 0)
    # Mask transparency dims the mask, and so the painting shows through the original only partly.
    dimmed, half_mask = compose_inpaint_sketch(image, strokes, mask_transparency=50)
    assert 120 <= half_mask.getpixel((10, 10)) <= 135
    red, _green, blue = dimmed.getpixel((10, 10))
    assert 80 <= red <= 120 and 110 <= blue <= 140


def test_sketch_modes_make_img2img_requests(backend):
    from sdstudio.ui.img2img import make_img2img_request

    values = {"prompt": "x", "width": 32, "height": 32, "steps": 4, "mask_blur": 0, "inpainting_fill": 1}
    values |= {"inpaint_full_res": 0, "inpaint_full_res_padding": 32, "inpainting_mask_invert": 0}
    args = (None, None, None, None)
    sketch = make_img2img_request(backend, values, "sketch", *args, _sketched_canvas(), None)
    assert sketch.mask is None and sketch.init_images[0].getpixel((10, 10)) == (0, 0, 255)
    inpaint = make_img2img_request(backend, values, "inpaint_sketch", *args, None, _sketched_canvas(), 0)
    assert inpaint.mask is not None and inpaint.mask.getbbox() == (8, 8, 16, 16)
    assert inpaint.init_images[0].getpixel((10, 10)) == (0, 0, 255)
    with pytest.raises(InvalidRequest) as err:
        make_img2img_request(backend, values, "inpaint_sketch", *args, _sketched_canvas(), None, 0)
    assert err.value.field == "init_images" and "inpaint sketch" in str(err.value)


# -- settings sections and labels --------------------------------------------------------------


def test_every_option_has_a_section_and_a_human_label():
    from sdstudio.config import OPTION_INFO

    assert set(OPTION_INFO) == set(Settings.model_fields)  # a new option needs its label here
    for name, info in OPTION_INFO.items():
        assert info.section and info.label and info.label != name, name


def test_settings_tab_shows_sections_and_labels_not_option_keys(backend):
    import gradio as gr

    from sdstudio.ui.settings import build_settings_tab

    with gr.Blocks() as blocks:
        build_settings_tab(backend)
    components = blocks.get_config_file()["components"]
    sections = [c["props"]["label"] for c in components if c["type"] == "accordion"]
    assert sections[:3] == ["Saving images/grids", "Paths for saving", "Saving to a directory"]
    assert {"Stable Diffusion", "Sampler parameters", "Face restoration", "Upscaling", "User interface"} <= set(
        sections
    )
    labels = {
        c["props"]["elem_id"]: c["props"]["label"]
        for c in components
        if c["props"].get("elem_id", "").startswith("setting_")
    }
    assert labels["setting_samples_save"] == "Always save all generated images"
    assert labels["setting_CLIP_stop_at_last_layers"] == "Clip skip"
    assert not any(key.removeprefix("setting_") == label for key, label in labels.items())


# -- image boxes: the decode limit -------------------------------------------------------------

IMAGE_BOX_FIELDS = {
    "img2img_image": "init_images",
    "img2img_sketch": "init_images",
    "img2img_inpaint_editor": "init_images",
    "img2img_inpaint_sketch": "init_images",
    "img2img_upload_image": "init_images",
    "img2img_upload_mask": "mask",
    "extras_image": "image",
    "pnginfo_image": "image",
}


def _upload(component, path):
    """What Gradio hands a box's preprocess for a dropped file (an ImageEditor gets it as its background)."""
    import gradio as gr
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData, ImageData

    if isinstance(component, gr.ImageEditor):
        return EditorData(background=FileData(path=str(path)), layers=[], composite=FileData(path=str(path)))
    return ImageData(path=str(path), orig_name=path.name)


def test_every_image_box_refuses_an_image_over_img_max_decode_mp_naming_the_field(backend, tmp_path):
    """Gradio decodes a dropped image before the tab's function runs: the box checks the setting first."""
    import gradio as gr
    from bad_files import png_declaring

    from sdstudio.engine.job_queue import JobQueue
    from sdstudio.ui.webui import build_ui

    blocks = build_ui(backend, JobQueue())
    boxes = {block.elem_id: block for block in blocks.blocks.values() if isinstance(block, (gr.Image, gr.ImageEditor))}
    assert set(boxes) == set(IMAGE_BOX_FIELDS)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 40), "red").save(small)  # 0.0016 megapixels
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20_000, 20_000, complete=False))  # 400 megapixels, a few bytes
    backend.settings_store.change({"img_max_decode_mp": 0.004})
    for elem_id, field in IMAGE_BOX_FIELDS.items():
        assert boxes[elem_id].preprocess(_upload(boxes[elem_id], small)) is not None, elem_id
        for too_large in (bomb, _saved(tmp_path, Image.new("RGB", (100, 100)))):  # 0.01 megapixels
            with pytest.raises(gr.Error) as err:
                boxes[elem_id].preprocess(_upload(boxes[elem_id], too_large))
            assert str(err.value.message).startswith(f"{field}: image too large"), (elem_id, err.value.message)
            assert "img_max_decode_mp" in err.value.message
    config = {c["props"].get("elem_id"): c["type"] for c in blocks.get_config_file()["components"]}
    assert {config[elem_id] for elem_id in IMAGE_BOX_FIELDS} == {"image", "imageeditor"}  # drawn as Gradio's own


def _saved(folder, image: Image.Image):
    path = folder / f"{image.width}x{image.height}.png"
    image.save(path)
    return path


def test_backend_check_image_names_the_field_and_the_setting(backend, tmp_path):
    from bad_files import png_declaring

    backend.settings_store.change({"img_max_decode_mp": 1})
    backend.check_image(png_declaring(1000, 1000, complete=False), "mask")
    with pytest.raises(InvalidRequest) as err:
        backend.check_image(png_declaring(1001, 1000, complete=False), "mask")
    assert err.value.field == "mask" and "(setting img_max_decode_mp)" in err.value.reason
    with pytest.raises(InvalidRequest) as err:
        backend.check_image(b"not an image", "init_images")
    assert err.value.field == "init_images" and "not a decodable image" in err.value.reason


# -- choosing a checkpoint: loaded first, as POST /options does -----------------------------------


def test_a_checkpoint_that_does_not_load_is_not_selected_and_the_dropdown_goes_back(data_dir, running_queue):
    from bad_files import write_good_safetensors
    from tiny_models import write_tiny_checkpoint

    from sdstudio.ui.webui import build_ui

    folder = data_dir / "models" / "Stable-diffusion"
    write_tiny_checkpoint(folder, "first.safetensors")
    data = write_tiny_checkpoint(folder, "model.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])  # refused before loading
    write_good_safetensors(folder / "not-a-model.safetensors")  # a whole file that fails to load
    backend = UiBackend.from_app(open_app(data_dir))
    blocks = build_ui(backend, running_queue)
    on_checkpoint = next(fn for fn in blocks.fns.values() if fn.name == "on_checkpoint")
    on_checkpoint.fn(page(), "model.safetensors")
    assert backend.current_checkpoint() == "model.safetensors"
    assert backend.checkpoints.current_model.name == "model"
    saved = backend.paths.config_file.read_text()
    assert "model.safetensors" in json.loads(saved)["sd_model_checkpoint"]
    reasons = {
        "not-a-model.safetensors": "sd_model_checkpoint: .* the previous checkpoint stays selected",
        "truncated.safetensors": "sd_model_checkpoint: .*cut short",
        "no-such-file.safetensors": "no checkpoint named 'no-such-file.safetensors'",
    }
    for broken, reason in reasons.items():
        with pytest.warns(UserWarning, match=reason):  # gr.Warning outside a page: a Python warning
            dropdown, *sizes = on_checkpoint.fn(page(), broken)
        assert dropdown["value"] == "model.safetensors", broken  # back to the one still selected
        assert all(not isinstance(size, int) for size in sizes)  # sizes untouched (gr.skip)
        assert backend.current_checkpoint() == "model.safetensors"
        assert backend.paths.config_file.read_text() == saved, broken


def test_settings_tab_loads_a_checkpoint_before_saving_it(data_dir, running_queue):
    from bad_files import write_good_safetensors

    write_good_safetensors(data_dir / "models" / "Stable-diffusion" / "not-a-model.safetensors")
    backend = UiBackend.from_app(open_app(data_dir))
    with pytest.raises(InvalidRequest) as err:
        backend.apply_settings({"sd_model_checkpoint": "not-a-model.safetensors", "jpeg_quality": 90}, running_queue)
    assert err.value.field == "sd_model_checkpoint"
    assert backend.settings.jpeg_quality != 90 and not backend.paths.config_file.exists()


# -- the queue limits count the page's jobs per client -----------------------------------------


def test_ui_generation_counts_against_each_clients_queue_limit(data_dir_with_model):
    from sdstudio.ui.webui import build_ui

    backend = UiBackend.from_app(open_app(data_dir_with_model))
    backend.settings_store.change({"limit_queued_jobs_per_client": 1, "limit_queued_jobs": 2})
    queue = JobQueue()  # not started: every job stays waiting
    blocks = build_ui(backend, queue)
    generate = next(fn for fn in blocks.fns.values() if fn.api_name == "txt2img_generate")
    values = [component.value for component in generate.inputs]
    values[1] = "a red circle"  # after the checkpoint: the prompt

    def first_status(host: str) -> str:
        run = generate.fn(page(host), *values)
        status = next(run)[2]
        run.close()  # the job stays queued; the page stops following it
        return status

    assert "Queued" in first_status("10.0.0.1")
    refused = first_status("10.0.0.1")
    assert "limit_queued_jobs_per_client" in refused and "error" in refused
    assert "Queued" in first_status("10.0.0.2")  # another client still gets a place
    assert "limit_queued_jobs" in first_status("10.0.0.3")  # the queue as a whole is full
    assert queue.pending_count() == 2
    queue.stop()
