"""The scripts/extensions contract: hooks and callbacks in A1111's order with the right `p`, failures isolated.

Sample extensions (tests/extensions/sample_extensions/) are copied into a temporary data dir
and run on the bundled model through the real loader, engine and (for the API) HTTP server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sdstudio.app import open_app
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.engine.saving import read_infotext
from sdstudio.engine.scripting import ScriptSelection
from sdstudio.errors import InvalidRequest

SAMPLES = Path(__file__).parent / "sample_extensions"
SMALL = dict(prompt="a red circle", width=64, height=64, steps=2, sampler_name="Euler", seed=7)


def install(data_dir: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(SAMPLES / name, data_dir / "extensions" / name)


def probe_events(app) -> list[tuple[str, object]]:
    return app.scripts.find("txt2img", "probe").script.events


def test_every_hook_and_callback_runs_in_a1111_order_with_the_jobs_p(data_dir):
    install(data_dir, "probe")
    app = open_app(data_dir)
    events = probe_events(app)
    assert events == [("app_started", "App")]
    request = Txt2ImgRequest(**SMALL, batch_size=2, n_iter=2)
    result = app.engine.txt2img(
        request, scripts=ScriptSelection(alwayson_scripts={"Probe": {"args": [True, "tagged"]}})
    )

    names = [name for name, _ in events]
    assert names[:5] == ["app_started", "setup", "before_process", "model_loaded", "process"]
    assert events[1] == ("setup", (True, "tagged"))
    assert events[2] == ("before_process", ("a red circle", 2))
    prompts, seeds = events[4][1]
    assert prompts == ["a red circle"] * 4 and seeds == [7, 8, 9, 10]
    # Per batch: before_process_batch, process_batch, 3 guided UNet calls (the probe set steps=3), decode, images.
    per_batch = [
        "before_process_batch",
        "process_batch",
        *["cfg_denoiser", "cfg_denoised"] * 3,
        "postprocess_batch",
        *["postprocess_image", "before_image_saved", "image_saved"] * 2,
    ]
    grid = ["before_image_saved", "image_saved"]
    assert names[5:] == per_batch + per_batch + grid + ["postprocess"]
    batch_events = [details for name, details in events if name == "before_process_batch"]
    assert batch_events == [
        (0, ["a red circle, tagged 0", "a red circle, tagged 1"], [7, 8]),
        (1, ["a red circle, tagged 2", "a red circle, tagged 3"], [9, 10]),
    ]
    assert ("cfg_denoised", 3) in events  # total_sampling_steps: the steps the probe set in before_process
    batch_number, shape, low, high = next(details for name, details in events if name == "postprocess_batch")
    assert (batch_number, shape) == (0, (2, 3, 64, 64)) and 0.0 <= low <= high <= 1.0
    assert events[-1] == ("postprocess", 5)  # the grid and four images

    # What the scripts changed reaches the images, the files and the infotexts.
    assert len(result.saved_paths) == 4
    for index, path in enumerate(result.saved_paths):
        from PIL import Image

        with Image.open(path) as saved:
            assert saved.convert("RGB").getpixel((10, 10)) == (255, 0, 255)  # postprocess_image replaced it
            infotext = read_infotext(saved)
        assert infotext.startswith(f"a red circle, tagged {index}\n")
        assert "Steps: 3," in infotext and "Probe tag: tagged" in infotext
        assert infotext.endswith("Probe saved: yes")  # on_before_image_saved changed what was written
    saved_names = [Path(details).name for name, details in events if name == "image_saved"]
    assert saved_names[:4] == [p.name for p in result.saved_paths]


def test_always_on_script_runs_with_its_defaults_when_the_request_does_not_name_it(data_dir):
    install(data_dir, "probe")
    app = open_app(data_dir)
    result = app.engine.txt2img(Txt2ImgRequest(**SMALL))
    events = probe_events(app)
    assert ("setup", (False, "default-tag")) in events
    assert "Probe tag" not in result.infotexts[0] and "Steps: 2," in result.infotexts[0]


def test_a_broken_extension_is_reported_and_the_app_and_job_go_on(data_dir):
    install(data_dir, "broken_import", "broken_process", "probe")
    app = open_app(data_dir)
    statuses = {status.name: status for status in app.scripts.statuses}
    assert "ImportError: this extension needs a module that is not here" in statuses["broken_import"].errors[0]
    assert statuses["probe"].scripts == ["Probe"]  # the others still load

    result = app.engine.txt2img(Txt2ImgRequest(**SMALL))
    assert len(result.images) == 1 and result.saved_paths  # the job finished
    warning = next(w for w in result.warnings if "broken_process" in w)
    assert "'Broken process' (process) failed" in warning and "boom in process" in warning
    assert any("boom in process" in e for e in statuses["broken_process"].errors)
    assert ("postprocess", 1) in probe_events(app)  # the healthy extension's hooks still ran


def test_a_selected_script_takes_over_and_its_failure_names_the_extension(data_dir):
    install(data_dir, "twice")
    app = open_app(data_dir)
    result = app.engine.txt2img(Txt2ImgRequest(**SMALL), scripts=ScriptSelection("twice", [5]))
    assert result.seeds == [7, 12] and len(result.images) == 2
    assert "Seed: 12," in result.infotexts[1]
    with pytest.raises(Exception, match=r"extension twice: script 'Twice' failed in run: ValueError: unlucky offset"):
        app.engine.txt2img(Txt2ImgRequest(**SMALL), scripts=ScriptSelection("Twice", [13]))
    with pytest.raises(InvalidRequest, match="script_name: script 'nope' is not installed for txt2img"):
        app.scripts.for_job("txt2img", ScriptSelection("nope"))
    with pytest.raises(InvalidRequest, match=r"script_args: Twice: Seed offset \(0\): must be a finite number"):
        app.scripts.for_job("txt2img", ScriptSelection("Twice", ["nan"]))


def test_enable_and_disable_survive_a_restart(data_dir):
    app = open_app(data_dir)
    status = app.extensions.install(str(SAMPLES / "probe"))
    assert status.enabled and status.scripts == ["Probe"]
    assert app.extensions.disable("probe").enabled is False
    assert "probe" not in app.scripts.titles("txt2img")

    restarted = open_app(data_dir)
    assert [(s.name, s.enabled) for s in restarted.extensions.list()] == [("probe", False)]
    assert "probe" not in restarted.scripts.titles("txt2img")
    restarted.extensions.enable("probe")
    assert "probe" in open_app(data_dir).scripts.titles("txt2img")

    restarted.extensions.remove("probe")
    assert restarted.extensions.list() == [] and not (data_dir / "extensions" / "probe").exists()
