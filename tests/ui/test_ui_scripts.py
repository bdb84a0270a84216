"""The web UI's scripts and extensions without a browser: script controls as Gradio components, their
values as a ScriptSelection in ui() order, Generate with a script, the Extensions tab's functions,
extension options in Settings and tabs that extensions add."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from sdstudio.app import open_app
from sdstudio.engine.job_queue import JobQueue
from sdstudio.extensions.scripts import controls as c
from sdstudio.ui.backend import UiBackend

SAMPLES = Path(__file__).resolve().parents[1] / "extensions" / "sample_extensions"


def install(data_dir: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(SAMPLES / name, data_dir / "extensions" / name)


def page():
    return gr.Request(client={"host": "127.0.0.1"})


# -- controls -> components -> arguments ---------------------------------------------------------


def test_every_control_kind_becomes_its_gradio_component():
    from sdstudio.ui.scripts import component_for_control

    with gr.Blocks():
        slider = component_for_control(c.Slider(label="Offset", value=3, minimum=1, maximum=9, step=2), "s")
        number = component_for_control(c.Number(label="Count", value=4), "n")
        checkbox = component_for_control(c.Checkbox(label="On", value=True, info="why"), "c")
        textbox = component_for_control(c.Textbox(label="Text", value="x", lines=4), "t")
        by_index = component_for_control(c.Dropdown(label="Axis", choices=["A", "B"], value=1, type="index"), "d")
        radio = component_for_control(c.Radio(label="Mode", choices=["p", "q"], value="q"), "r")
        group = component_for_control(c.CheckboxGroup(label="Which", choices=["u", "v"], value=["v"]), "g")
        upload = component_for_control(c.File(label="File"), "f")
        image = component_for_control(c.Image(label="Image"), "i")
        hidden = component_for_control(c.Control(label="raw", value={"k": 1}), "x")
    assert isinstance(slider, gr.Slider) and (slider.minimum, slider.maximum, slider.step, slider.value) == (1, 9, 2, 3)
    assert isinstance(number, gr.Number) and number.value == 4 and number.precision == 0
    assert number.minimum is None and number.maximum is None  # unbounded, not infinity
    assert isinstance(checkbox, gr.Checkbox) and checkbox.value is True and checkbox.info == "why"
    assert isinstance(textbox, gr.Textbox) and textbox.lines == 4 and textbox.label == "Text"
    assert isinstance(by_index, gr.Dropdown) and by_index.type == "index" and by_index.value == "B"
    assert by_index.preprocess("B") == 1  # the script gets the position, as A1111's index dropdowns give
    assert isinstance(radio, gr.Radio) and radio.value == "q"
    assert isinstance(group, gr.CheckboxGroup) and group.value == ["v"]
    assert isinstance(upload, gr.File) and isinstance(image, gr.Image) and image.type == "pil"
    assert isinstance(hidden, gr.State) and hidden.value == {"k": 1}  # undrawable, but keeps its place
    assert slider.elem_id == "s"


def entry(title: str, *controls: c.Control):
    """A host script entry as the panel reads it (title and controls)."""
    return SimpleNamespace(title=title, controls=list(controls))


def test_panel_values_become_the_chosen_scripts_args_in_ui_order_and_alwayson_args(tmp_path):
    from sdstudio.ui.scripts import NO_SCRIPT, build_script_panel

    text_file = tmp_path / "prompts.txt"
    text_file.write_text("a cat\na dog\n", encoding="utf-8")
    with gr.Blocks():
        panel = build_script_panel(
            "txt2img",
            [
                entry("First", c.Slider(label="a", value=1), c.Textbox(label="b")),
                entry("From file", c.Checkbox(label="c"), c.File(label="d")),
            ],
            [entry("Always", c.Checkbox(label="on"), c.Dropdown(label="mode", choices=["x", "y"], type="index"))],
        )
    inputs = panel.inputs()
    assert inputs[0] is panel.dropdown and len(inputs) == 1 + 2 + 2 + 2
    assert panel.dropdown.choices == [(NO_SCRIPT, NO_SCRIPT), ("First", "First"), ("From file", "From file")]
    values = ["From file", 5, "bee", True, str(text_file), True, 1]

    chosen = panel.selection(values)
    assert chosen.script_name == "From file"
    assert chosen.script_args == [True, "a cat\na dog\n"]  # an uploaded file reaches the script as its text
    assert chosen.alwayson_scripts == {"always": {"args": [True, 1]}}

    first = panel.selection(["First", *values[1:]])
    assert (first.script_name, first.script_args) == ("First", [5, "bee"])
    none = panel.selection([NO_SCRIPT, *values[1:]])
    assert (none.script_name, none.script_args) == (None, [])
    with pytest.raises(ValueError, match="6 controls but 5 values"):
        panel.selection(values[:-1])


def test_choosing_a_script_shows_only_its_controls():
    from sdstudio.ui.scripts import build_script_panel

    with gr.Blocks() as blocks:
        panel = build_script_panel("img2img", [entry("One", c.Checkbox()), entry("Two", c.Checkbox())], [])
    show = next(fn for fn in blocks.fns.values() if fn.name == "show_chosen")
    assert [update["visible"] for update in show.fn("Two")] == [False, True]
    assert [update["visible"] for update in show.fn("None")] == [False, False]
    assert [script.container.visible for script in panel.selectable] == [False, False]

    with gr.Blocks() as blocks:
        build_script_panel("img2img", [entry("Only", c.Checkbox())], [])
    show = next(fn for fn in blocks.fns.values() if fn.name == "show_chosen")
    assert show.fn("Only")["visible"] is True  # one output: its update alone, as Gradio takes it


# -- Generate with scripts, on the bundled model -----------------------------------------------------


def generate_values(blocks, kind: str, **by_elem_id):
    """The Generate event's function and its input values, with the components named by elem_id set."""
    generate = next(fn for fn in blocks.fns.values() if fn.api_name == f"{kind}_generate")
    values = []
    for component in generate.inputs:
        elem_id = getattr(component, "elem_id", None)
        values.append(by_elem_id[elem_id] if elem_id in by_elem_id else component.value)
    return generate.fn, values


def final(run):
    *_, last = run
    return last


SMALL = {
    "txt2img_width": 64,
    "txt2img_height": 64,
    "txt2img_steps": 2,
    "txt2img_sampling": "Euler",
    "txt2img_seed": 7,
}


def test_generate_runs_the_chosen_script_and_the_alwayson_ones_with_the_pages_values(data_dir, running_queue):
    from sdstudio.ui.webui import build_ui

    install(data_dir, "twice", "probe")
    backend = UiBackend.from_app(open_app(data_dir))
    blocks = build_ui(backend, running_queue)
    generate, values = generate_values(
        blocks,
        "txt2img",
        txt2img_prompt="a red circle",
        txt2img_script_list="Twice",
        txt2img_script_twice_0=5,
        txt2img_script_probe_0=True,
        txt2img_script_probe_1="from-the-page",
        **SMALL,
    )
    images, _progress, text, state, _selected = final(generate(page(), *values))
    assert len(images) == 2 and state["seeds"] == [7, 12]  # Twice: the seed, then the seed + the slider's offset
    assert "Seed: 7," in state["infotexts"][0] and "Seed: 12," in state["infotexts"][1]
    assert all("Probe tag: from-the-page" in infotext for infotext in state["infotexts"])
    assert "Done: 2 image(s)" in text

    _, values = generate_values(
        blocks, "txt2img", txt2img_prompt="a red circle", txt2img_script_list="Twice", txt2img_script_twice_0=13
    )
    *_, (_images, _progress, failed, _state, _selected) = generate(page(), *values)
    assert "extension twice: script &#x27;Twice&#x27; failed in run: ValueError: unlucky offset" in failed
    assert "Traceback" not in failed


def test_a_script_the_page_does_not_know_is_refused_before_queueing(data_dir):
    from sdstudio.ui.webui import build_ui

    install(data_dir, "twice")
    app = open_app(data_dir)
    backend = UiBackend.from_app(app)
    queue = JobQueue()  # not started: nothing may be queued
    blocks = build_ui(backend, queue)
    shutil.rmtree(data_dir / "extensions" / "twice")
    app.scripts.load()  # removed since the page was built
    generate, values = generate_values(blocks, "txt2img", txt2img_prompt="x", txt2img_script_list="Twice")
    status = next(generate(page(), *values))[2]
    assert "script_name: script &#x27;Twice&#x27; is not installed for txt2img" in status
    assert queue.pending_count() == 0
    on_page_load = next(fn for fn in blocks.fns.values() if fn.name == "on_page_load")
    offered = [[label for label, _ in update.choices] for update in on_page_load.fn()]
    assert offered[0][0] == "None" and "Twice" not in offered[0] + offered[1]  # a reload drops it
    assert "X/Y/Z plot" in offered[0] and "Loopback" in offered[1]  # the built-in ones stay


def test_img2img_batch_runs_the_chosen_script_on_each_file(data_dir, tmp_path):
    from PIL import Image

    from sdstudio.engine.scripting import ScriptSelection
    from sdstudio.ui.img2img import make_img2img_batch, run_img2img_job

    install(data_dir, "twice")
    backend = UiBackend.from_app(open_app(data_dir))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("one", "two"):
        Image.new("RGB", (64, 64), (200, 40, 40)).save(inputs / f"{name}.png")
    values = {"prompt": "a fruit", "width": 64, "height": 64, "steps": 2, "seed": 5, "sampler_name": "Euler"}
    batch = make_img2img_batch(backend, values, str(inputs), "", "")
    result = run_img2img_job(backend, batch, None, ScriptSelection("Twice", [3]))
    assert result.seeds == [5, 8, 5, 8]  # A1111 runs the script on each file


# -- pasting an infotext into always-on scripts ------------------------------------------------------


def pasted_by_elem_id(fn, *inputs) -> dict[str, object]:
    """What a send-to/paste event puts in each output component, by elem_id (gr.skip(): left as it is)."""
    return {getattr(out, "elem_id", None): value for out, value in zip(fn.outputs, fn.fn(*inputs))}


def test_pasting_an_infotext_fills_alwayson_script_controls_from_their_infotext_fields(data_dir):
    from sdstudio.ui.webui import build_ui

    install(data_dir, "probe")  # infotext_fields: (0, "Probe"), (1, "Probe tag")
    backend = UiBackend.from_app(open_app(data_dir))
    blocks = build_ui(backend, JobQueue())
    to_txt2img = next(fn for fn in blocks.fns.values() if fn.name == "png_to_txt2img")
    infotext = "a cat\nSteps: 5, Sampler: Euler, Seed: 3, Size: 64x64, Probe: True, Probe tag: pasted-tag"

    pasted = pasted_by_elem_id(to_txt2img, infotext)
    assert pasted["txt2img_script_probe_0"] is True and pasted["txt2img_script_probe_1"] == "pasted-tag"
    assert pasted["txt2img_prompt"] == "a cat" and pasted["txt2img_steps"] == 5
    probe = next(entry for entry in backend.alwayson_scripts("txt2img") if entry.name == "probe").script
    assert ("infotext_pasted", infotext) in probe.events  # the extensions' callback saw it, as over the API

    only_tag = pasted_by_elem_id(to_txt2img, "a cat\nSteps: 5, Seed: 3, Probe tag: just-the-tag")
    assert only_tag["txt2img_script_probe_1"] == "just-the-tag"
    assert isinstance(only_tag["txt2img_script_probe_0"], type(gr.skip()))  # not in the infotext: left as it is
    untouched = pasted_by_elem_id(to_txt2img, "a cat\nSteps: 5, Seed: 3, Size: 64x64")
    assert all(isinstance(untouched[f"txt2img_script_probe_{i}"], type(gr.skip())) for i in (0, 1))

    to_img2img = next(fn for fn in blocks.fns.values() if fn.name == "png_send")
    pasted = pasted_by_elem_id(to_img2img, None, infotext)
    assert pasted["img2img_script_probe_1"] == "pasted-tag"


def test_a_pasted_index_choice_shows_the_choice_it_names():
    from sdstudio.ui.paste import alwayson_values
    from sdstudio.ui.scripts import ScriptControls

    pick = ScriptControls(
        "Pick", [c.Dropdown(label="Mode", choices=["a", "b"], type="index"), c.Checkbox()], [(0, "Mode")]
    )
    assert alwayson_values([pick], {"pick": [1, False]}, {"Mode": "b"}, "skip") == ["b", "skip"]
    assert alwayson_values([pick], {}, {"Other": "x"}, "skip") == ["skip", "skip"]


# -- the Extensions tab ------------------------------------------------------------------------------


def test_install_disable_enable_and_remove_from_the_extensions_tab(data_dir):
    from sdstudio.ui.extensions import apply_enabled, extension_rows, install_extension, remove_extension

    app = open_app(data_dir)
    backend = UiBackend.from_app(app)
    assert extension_rows(backend) == []

    notice = install_extension(backend, str(SAMPLES / "probe"), "")
    assert "Installed probe" in notice and "(Probe)" in notice and "Reload the page" in notice
    assert extension_rows(backend) == [["probe", "yes", "Probe", "", "", ""]]
    assert "probe" in app.scripts.titles("txt2img")

    assert "probe disabled" in apply_enabled(backend, [])
    assert extension_rows(backend)[0][:3] == ["probe", "no", ""]
    assert "probe" not in app.scripts.titles("txt2img")
    assert json.loads(backend.paths.config_file.read_text())["disabled_extensions"] == ["probe"]
    assert "No extension was enabled or disabled" in apply_enabled(backend, [])
    assert "probe enabled" in apply_enabled(backend, ["probe"])
    assert "probe" in app.scripts.titles("txt2img")

    again = install_extension(backend, str(SAMPLES / "probe"), None)
    assert "already installed" in again and "error" in again
    missing = install_extension(backend, str(data_dir / "no-such-folder"), "")
    assert "neither a folder nor a git repository" in missing and "Traceback" not in missing
    assert "give a folder or a git URL" in install_extension(backend, "  ", "")
    assert "bad/name" in install_extension(backend, str(SAMPLES / "twice"), "bad/name")

    broken = install_extension(backend, str(SAMPLES / "broken_import"), "")
    assert "Installed broken_import" in broken and "ImportError" in broken  # installed, its problem named
    assert "ImportError" in extension_rows(backend)[0][3]

    assert "Removed probe" in remove_extension(backend, "probe")
    assert [row[0] for row in extension_rows(backend)] == ["broken_import"]
    assert "not installed" in remove_extension(backend, "probe")


def test_the_page_of_a_server_listening_on_all_interfaces_does_not_change_extensions(data_dir):
    from sdstudio.ui.extensions import apply_enabled, install_extension, remove_extension

    install(data_dir, "probe")
    backend = UiBackend.from_app(open_app(data_dir), extension_access=False)
    for notice in (
        install_extension(backend, str(SAMPLES / "twice"), ""),
        apply_enabled(backend, []),
        remove_extension(backend, "probe"),
    ):
        assert "--listen" in notice and "error" in notice
    assert not (data_dir / "extensions" / "twice").exists() and (data_dir / "extensions" / "probe").exists()
    assert [status.enabled for status in backend.extension_statuses()] == [True]


def test_an_unexpected_failure_is_a_notice_not_a_traceback(data_dir, monkeypatch):
    from sdstudio.ui.extensions import install_extension

    backend = UiBackend.from_app(open_app(data_dir))

    def copy_fails(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(data_dir / "extensions"))

    monkeypatch.setattr(shutil, "copytree", copy_fails)
    notice = install_extension(backend, str(SAMPLES / "probe"), "")
    assert "Installing failed: PermissionError" in notice and "Permission denied" in notice


# -- extension options in Settings, tabs from extensions -------------------------------------------------


def settings_apply(blocks):
    apply = next(fn for fn in blocks.fns.values() if fn.name == "on_apply")
    names = [component.elem_id.removeprefix("setting_") for component in apply.inputs[1:]]
    return apply, names


def test_extension_options_have_their_own_section_and_save_like_the_others(data_dir):
    from sdstudio.ui.settings import build_settings_tab

    install(data_dir, "probe")  # adds probe_strength (default 0.5) in the section "Probe"
    backend = UiBackend.from_app(open_app(data_dir))
    with gr.Blocks() as blocks:
        build_settings_tab(backend)
    config = blocks.get_config_file()
    by_id = {comp["props"].get("elem_id"): comp for comp in config["components"]}
    assert by_id["settings_section_probe"]["props"]["label"] == "Probe"
    assert by_id["setting_probe_strength"]["props"]["label"] == "Probe strength"
    assert by_id["setting_probe_strength"]["props"]["value"] == 0.5
    disabled = by_id["setting_disabled_extensions"]  # a list option: a list comes back, not its text
    assert disabled["type"] == "dropdown" and disabled["props"]["multiselect"] is True

    apply, names = settings_apply(blocks)
    shown = {name: backend.option_value(name) for name in names}
    values = [0.75 if name == "probe_strength" else shown[name] for name in names]
    message, now = apply.fn(page(), shown, *values)
    assert "probe_strength" in message and "1 setting(s) changed" in message  # the list option came back as a list
    assert json.loads(backend.paths.config_file.read_text())["probe_strength"] == 0.75
    assert backend.option_value("probe_strength") == 0.75 and now["probe_strength"] == 0.75


def write_tab_extension(data_dir: Path) -> None:
    folder = data_dir / "extensions" / "tabs" / "scripts"
    folder.mkdir(parents=True)
    (folder / "tabs.py").write_text(
        "import gradio as gr\n"
        "\n"
        "def good():\n"
        "    gr.Markdown('hello from an extension', elem_id='extension_tab_text')\n"
        "\n"
        "def bad():\n"
        "    gr.Markdown('half built')\n"
        "    raise RuntimeError('tab boom')\n"
        "\n"
        "def register_callbacks(callbacks):\n"
        "    callbacks.on_ui_tabs(lambda: [(good, 'Good tab', 'good_tab'), (bad, 'Bad tab', 'bad_tab')])\n"
        "    callbacks.on_ui_tabs(lambda: 'not a list of tabs')\n",
        encoding="utf-8",
    )


def test_extensions_add_tabs_and_a_failing_one_is_reported_and_left_out(data_dir):
    from sdstudio.ui.webui import build_ui

    write_tab_extension(data_dir)
    backend = UiBackend.from_app(open_app(data_dir))
    blocks = build_ui(backend, JobQueue())
    by_id = {comp["props"].get("elem_id"): comp for comp in blocks.get_config_file()["components"]}
    assert by_id["tab_good_tab"]["props"]["visible"] is True and "extension_tab_text" in by_id
    assert by_id["tab_bad_tab"]["props"]["visible"] is False
    errors = next(status for status in backend.extension_statuses() if status.name == "tabs").errors
    assert any("'Bad tab' failed to build" in error and "RuntimeError: tab boom" in error for error in errors)
    assert any("expected (builder, title, elem_id), got 'not a list of tabs'" in error for error in errors)
