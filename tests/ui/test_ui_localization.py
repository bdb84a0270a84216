"""Localization (A1111's localizations/*.json, chosen in Settings) and the extensions' page files
(javascript/*.js, style.css), without a browser: what is found, merged, chosen and put in the page,
and that the bundled zh_CN covers every string the built-in page shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr

from sdstudio.app import open_app
from sdstudio.engine.job_queue import JobQueue
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.localization import BUNDLED_LOCALIZATIONS

LETTERS = re.compile(r"[A-Za-z]")


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def shown_fragments(markup: str) -> list[str]:
    """The pieces of text a Markdown/HTML value shows as separate text nodes (code spans and tags split them)."""
    return [piece.strip() for piece in re.split(r"`[^`]*`|<[^>]*>", markup) if LETTERS.search(piece)]


def page_strings(blocks: gr.Blocks) -> set[str]:
    """Every English string the page shows as words: labels, placeholders, infos, buttons, tab and accordion
    titles, table headers, radio/checkbox choices, script controls' dropdown choices and static text."""
    found: set[str] = set()

    def add(text) -> None:
        if isinstance(text, str) and LETTERS.search(text):
            found.add(text.strip())

    for block in blocks.blocks.values():
        for prop in ("label", "placeholder", "info"):
            add(getattr(block, prop, None))
        if isinstance(block, gr.Button):
            add(block.value)
        elem_id = getattr(block, "elem_id", None) or ""
        script_control = "_script_" in elem_id  # the Script dropdowns and every script control
        if isinstance(block, (gr.Radio, gr.CheckboxGroup)) or (isinstance(block, gr.Dropdown) and script_control):
            for shown, _value in block.choices:
                add(shown)
        if isinstance(block, gr.Dataframe):
            for header in block.headers or []:
                add(header)
        if isinstance(block, (gr.Markdown, gr.HTML)) and isinstance(block.value, str):
            for piece in shown_fragments(block.value):
                add(piece)
    return found


def test_zh_cn_translates_every_string_of_the_built_in_page(data_dir):
    from sdstudio.server.routes.tasks import TASK_KINDS
    from sdstudio.server.tasks import TaskRunner
    from sdstudio.ui.extensions import build_extensions_tab
    from sdstudio.ui.webui import build_ui

    zh_cn = json.loads((BUNDLED_LOCALIZATIONS / "zh_CN.json").read_text(encoding="utf-8"))
    app = open_app(data_dir)
    queue = JobQueue()
    tasks = TaskRunner.open(app, queue, TASK_KINDS)  # the Queue tab is on the page with the task runner
    blocks = build_ui(UiBackend.from_app(app, tasks=tasks), queue)
    strings = page_strings(blocks)
    with gr.Blocks() as without_access:  # the Extensions tab of a server started with --listen
        build_extensions_tab(UiBackend.from_app(app, extension_access=False))
    strings |= page_strings(without_access)

    assert {
        "Generate",
        "Sampling method",
        "Prompt matrix",
        "Iterate seed every line",
        "Apply settings",
        "Queue",
    } <= strings
    assert len(strings) > 200  # the walk reached every tab
    missing = sorted(strings - set(zh_cn))
    assert not missing, f"add these to src/sdstudio/assets/localizations/zh_CN.json: {missing}"
    assert all(isinstance(text, str) and text.strip() for text in zh_cn.values())
    assert zh_cn["Generate"] == "生成" and zh_cn["txt2img"] == "文生图"


def test_zh_cn_has_the_x_y_z_plot_axes_of_a1111():
    zh_cn = json.loads((BUNDLED_LOCALIZATIONS / "zh_CN.json").read_text(encoding="utf-8"))
    axes = ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R"]
    axes += ["Prompt order", "Sampler", "Checkpoint name", "Sigma Churn", "Schedule type", "Clip skip", "Denoising"]
    axes += ["VAE", "Styles", "Refiner checkpoint", "Refiner switch at", "RNG source", "X type", "Keep -1 for seeds"]
    assert [axis for axis in axes if axis not in zh_cn] == []


def test_localizations_from_the_data_dir_and_enabled_extensions_are_offered_and_merged(data_dir):
    from sdstudio.ui.settings import build_settings_tab

    write(data_dir / "localizations" / "fr_FR.json", json.dumps({"Generate": "Générer"}))
    write(data_dir / "localizations" / "zh_CN.json", json.dumps({"Generate": "开始生成"}))
    write(data_dir / "localizations" / "broken.json", "{not json")
    write(data_dir / "localizations" / "notes.txt", "not a localization")
    write(data_dir / "extensions" / "lang" / "localizations" / "fr_FR.json", json.dumps({"Interrupt": "Interrompre"}))
    write(data_dir / "extensions" / "lang" / "localizations" / "broken.json", json.dumps({"Skip": "Passer"}))
    write(data_dir / "extensions" / "off" / "localizations" / "de_DE.json", json.dumps({"Generate": "Erzeugen"}))
    app = open_app(data_dir)
    app.extensions.disable("off")
    backend = UiBackend.from_app(app)

    assert backend.localization_names() == ["None", "broken", "fr_FR", "zh_CN"]  # not the disabled extension's
    assert backend.localization() == {}  # the setting's default: English

    app.settings_store.change({"localization": "fr_FR"})
    assert backend.localization() == {"Generate": "Générer", "Interrupt": "Interrompre"}
    app.settings_store.change({"localization": "zh_CN"})
    merged = backend.localization()
    assert (
        merged["Generate"] == "开始生成" and merged["Interrupt"] == "中止"
    )  # the data dir's file corrects the bundled one
    app.settings_store.change({"localization": "broken"})
    assert backend.localization() == {"Skip": "Passer"}  # the unreadable file is left out, the other one kept
    app.settings_store.change({"localization": "gone"})
    assert backend.localization() == {}  # a name no folder has any more: English

    with gr.Blocks() as blocks:
        build_settings_tab(backend)
    by_id = {comp["props"].get("elem_id"): comp for comp in blocks.get_config_file()["components"]}
    choice = by_id["setting_localization"]
    assert choice["type"] == "dropdown"
    assert [shown for shown, _ in choice["props"]["choices"]][:4] == ["None", "broken", "fr_FR", "zh_CN"]


def test_the_page_carries_enabled_extensions_scripts_and_styles_and_names_unreadable_ones(data_dir):
    from sdstudio.ui.webui import build_ui, page_head

    look = data_dir / "extensions" / "look"
    write(look / "javascript" / "look.js", "window.lookLoaded = '</script>';")
    write(look / "javascript" / "module.mjs", "export const look = 1;")
    write(look / "javascript" / "broken.js", b"\xff\xfe not utf-8 \xff")
    write(look / "style.css", "#txt2img_generate { letter-spacing: 3px; }")
    write(data_dir / "extensions" / "off" / "javascript" / "off.js", "window.offLoaded = true;")
    app = open_app(data_dir)
    app.extensions.disable("off")
    backend = UiBackend.from_app(app)

    assets = backend.page_assets()
    assert "window.lookLoaded = '<\\/script>';" in assets.head  # cannot end its element early
    assert '<script type="module">\nexport const look = 1;' in assets.head
    assert "<style>\n#txt2img_generate { letter-spacing: 3px; }" in assets.head
    assert "offLoaded" not in assets.head and "not utf-8" not in assets.head
    assert assets.problems == (
        ("look", "javascript/broken.js cannot be read (it is not UTF-8 text); the page is built without it"),
    )
    look_status = next(status for status in backend.extension_statuses() if status.name == "look")
    assert any("javascript/broken.js cannot be read" in error for error in look_status.errors)

    head = page_head(assets)
    assert head.index("window.gradioApp") < head.index("window.sdstudioLocalize") < head.index("lookLoaded")

    blocks = build_ui(backend, JobQueue(), assets=assets)
    by_id = {comp["props"].get("elem_id"): comp for comp in blocks.get_config_file()["components"]}
    note = by_id["extensions_page_file_problems"]["props"]
    assert note["visible"] is True and "look: javascript/broken.js cannot be read" in note["value"]

    quiet = build_ui(UiBackend.from_app(open_app(data_dir / "other")), JobQueue())
    by_id = {comp["props"].get("elem_id"): comp for comp in quiet.get_config_file()["components"]}
    assert by_id["extensions_page_file_problems"]["props"]["visible"] is False


def test_the_page_asks_for_the_localization_in_force_each_time_it_opens(data_dir):
    from sdstudio.ui.webui import build_ui

    app = open_app(data_dir)
    backend = UiBackend.from_app(app)
    blocks = build_ui(backend, JobQueue())
    load = next(fn for fn in blocks.fns.values() if fn.name == "localization")
    assert load.fn() == {}
    app.settings_store.change({"localization": "zh_CN"})  # chosen after the page was built
    assert load.fn()["Generate"] == "生成"
