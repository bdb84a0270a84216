"""The Checkpoint Merger tab's function over the real backend and job queue (no browser)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdstudio.app import open_app
from sdstudio.engine.job_queue import JobQueue
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.checkpoint_merger import MERGER_FIELDS, run_merge

# The tab's values as its components hold them by default (config_source is the radio's index).
TAB_DEFAULTS = {
    "primary_model_name": None,
    "secondary_model_name": None,
    "tertiary_model_name": None,
    "interp_method": "Weighted sum",
    "multiplier": 0.3,
    "save_as_half": False,
    "custom_name": "",
    "checkpoint_format": "safetensors",
    "config_source": 0,
    "bake_in_vae": "None",
    "discard_weights": "",
    "save_metadata": True,
    "add_merge_recipe": True,
    "copy_metadata_fields": True,
    "metadata_json": "{}",
}


def page():
    from sdstudio.ui.webui import offline_environment

    offline_environment()
    import gradio as gr

    return gr.Request(client={"host": "127.0.0.1"})


@pytest.fixture
def tab(data_dir):
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for name, seed in (("a", 1), ("b", 2)):
        generator = torch.Generator().manual_seed(seed)
        save_file(
            {"model.diffusion_model.w": torch.randn(4, 4, generator=generator)},
            folder / f"{name}.safetensors",
            metadata={"note": name},
        )
    app = open_app(data_dir)
    queue = JobQueue()
    queue.start()
    yield UiBackend.from_app(app), queue
    queue.stop()


def test_merge_button_merges_on_the_queue_and_reports_the_saved_file(tab, data_dir):
    backend, queue = tab
    assert set(MERGER_FIELDS) == set(TAB_DEFAULTS)
    values = {**TAB_DEFAULTS, "primary_model_name": "a.safetensors", "secondary_model_name": "b.safetensors"}
    shown = list(run_merge(backend, queue, page(), values))
    path = data_dir / "models" / "Stable-diffusion" / "0.7(a) + 0.3(b).safetensors"
    assert f"Checkpoint saved to {path}" in shown[-1] and "error" not in shown[-1]
    a, b = (load_file(data_dir / "models" / "Stable-diffusion" / f"{n}.safetensors") for n in "ab")
    merged = load_file(path)["model.diffusion_model.w"]
    assert torch.equal(merged, 0.7 * a["model.diffusion_model.w"] + 0.3 * b["model.diffusion_model.w"])
    assert path.name in backend.refresh_checkpoints()
    assert json.loads(backend.read_merge_metadata("a.safetensors", "b.safetensors")) == {"note": "b"}
    assert backend.bake_vae_choices() == ["None"]


def test_merge_button_shows_a_bad_field_by_name_and_writes_nothing(tab, data_dir):
    backend, queue = tab
    shown = list(run_merge(backend, queue, page(), {**TAB_DEFAULTS, "primary_model_name": "a.safetensors"}))
    assert len(shown) == 1 and "secondary_model_name" in shown[0] and "error" in shown[0]
    values = {**TAB_DEFAULTS, "primary_model_name": "a.safetensors", "secondary_model_name": "zz"}
    shown = list(run_merge(backend, queue, page(), values))
    assert "secondary_model_name" in shown[-1] and "error" in shown[-1]
    assert sorted(p.name for p in (data_dir / "models" / "Stable-diffusion").iterdir()) == [
        "a.safetensors",
        "b.safetensors",
    ]


def test_the_page_has_the_tab_with_a1111s_controls(tab):
    from sdstudio.ui.webui import build_ui

    backend, queue = tab
    config = build_ui(backend, queue).get_config_file()
    elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    for name in (
        "primary_model_name",
        "secondary_model_name",
        "tertiary_model_name",
        "interp_method",
        "interp_amount",
        "custom_name",
        "checkpoint_format",
        "save_as_half",
        "config_method",
        "bake_in_vae",
        "discard_weights",
        "save_metadata",
        "merge",
        "result",
    ):
        assert f"modelmerger_{name}" in elem_ids, name
