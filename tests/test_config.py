"""Settings: A1111 names, unknown keys preserved, atomic writes, corrupt file recovery."""

from __future__ import annotations

import json

import pytest

from sdstudio.app import open_app
from sdstudio.config import MODEL_KINDS, Settings, load_settings, resolve_data_dir, save_settings
from sdstudio.errors import InvalidRequest


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("SDSTUDIO_DATA_DIR", str(tmp_path / "from-env"))
    assert resolve_data_dir(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert resolve_data_dir(None) == (tmp_path / "from-env").resolve()
    monkeypatch.delenv("SDSTUDIO_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(None) == (tmp_path / "xdg" / "sdstudio").resolve()


def test_open_app_creates_a1111_layout(data_dir):
    app = open_app()
    assert app.paths.root == data_dir.resolve()
    for kind in MODEL_KINDS.values():
        for sub in kind.folders:
            assert (data_dir / sub).is_dir(), sub
    assert (data_dir / "outputs").is_dir()


def test_settings_defaults_use_a1111_names():
    names = Settings().to_json_dict()
    for key in (
        "sd_model_checkpoint",
        "sd_vae",
        "CLIP_stop_at_last_layers",
        "samples_format",
        "outdir_txt2img_samples",
        "outdir_img2img_samples",
        "outdir_grids",
        "save_images_add_number",
        "enable_pnginfo",
        "eta_noise_seed_delta",
    ):
        assert key in names


def test_unknown_keys_survive_a_save(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"samples_format": "jpg", "some_extension_option": [1, 2], "CLIP_stop_at_last_layers": 2})
    )
    settings = load_settings(path).settings
    assert settings.samples_format == "jpg"
    assert settings.CLIP_stop_at_last_layers == 2
    save_settings(settings.merged({"eta_noise_seed_delta": 31337}), path)
    saved = json.loads(path.read_text())
    assert saved["some_extension_option"] == [1, 2]
    assert saved["eta_noise_seed_delta"] == 31337
    assert saved["samples_format"] == "jpg"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"], "no temp file left behind"


def test_corrupt_config_is_backed_up_not_fatal(data_dir):
    data_dir.mkdir(parents=True)
    (data_dir / "config.json").write_text('{"samples_format": "png", ')
    app = open_app()
    assert app.settings == Settings()
    assert app.notices and "config.json" in app.notices[0]
    backups = list(data_dir.glob("config.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == '{"samples_format": "png", '
    app.settings_store.change({"samples_format": "jpg"})
    assert json.loads((data_dir / "config.json").read_text())["samples_format"] == "jpg"


def test_wrongly_typed_option_falls_back_to_its_default_and_the_others_are_kept(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"CLIP_stop_at_last_layers": "many", "jpeg_quality": 60}))
    loaded = load_settings(path)
    assert loaded.settings.CLIP_stop_at_last_layers == 1 and loaded.settings.jpeg_quality == 60
    assert len(loaded.notices) == 1 and "CLIP_stop_at_last_layers" in loaded.notices[0]


def test_run_overlay_is_in_force_but_never_saved(data_dir):
    app = open_app(run_options={"precision": "bf16", "sd_vae": "None"})
    assert app.settings.precision == "bf16" and app.settings.sd_vae == "None"
    app.settings_store.change({"samples_format": "jpg"})
    saved = json.loads((data_dir / "config.json").read_text())
    assert saved["samples_format"] == "jpg"
    assert saved["precision"] == "auto" and saved["sd_vae"] == "Automatic"
    assert app.settings.precision == "bf16", "the run flag still holds for this run"
    assert open_app().settings.precision == "auto", "a later run starts from the saved value"


def test_changing_an_overlaid_option_saves_the_new_choice(data_dir):
    app = open_app(run_options={"precision": "bf16"})
    assert app.settings_store.change({"precision": "fp32"}) == ["precision"]
    assert app.settings.precision == "fp32"
    assert json.loads((data_dir / "config.json").read_text())["precision"] == "fp32"


@pytest.mark.parametrize("outside", ["/tmp/elsewhere", "../escaped", "outputs/../../escaped"])
def test_output_folder_outside_the_data_dir_is_refused_and_not_saved(data_dir, outside):
    app = open_app()
    app.settings_store.change({"samples_format": "jpg"})
    before = (data_dir / "config.json").read_text()
    with pytest.raises(InvalidRequest) as refused:
        app.settings_store.change({"outdir_txt2img_samples": outside, "jpeg_quality": 50})
    assert refused.value.field == "outdir_txt2img_samples"
    assert (data_dir / "config.json").read_text() == before
    assert app.settings.jpeg_quality == 80


def test_folder_named_tilde_stays_inside_the_data_dir(data_dir):
    app = open_app()
    app.settings_store.change({"outdir_samples": "~/pictures"})
    assert app.settings.outdir_samples == "~/pictures"


def test_saved_outside_folder_falls_back_to_default_with_a_notice(data_dir):
    data_dir.mkdir(parents=True)
    (data_dir / "config.json").write_text(json.dumps({"outdir_txt2img_samples": "/etc", "jpeg_quality": 60}))
    app = open_app()
    assert app.settings.outdir_txt2img_samples == Settings().outdir_txt2img_samples
    assert app.settings.jpeg_quality == 60
    assert any("outdir_txt2img_samples" in notice for notice in app.notices)


def test_saved_checkpoint_path_outside_falls_back_to_default_with_a_notice(data_dir, tmp_path):
    data_dir.mkdir(parents=True)
    (data_dir / "config.json").write_text(json.dumps({"sd_model_checkpoint": str(tmp_path / "x.safetensors")}))
    app = open_app()
    assert app.settings.sd_model_checkpoint == ""
    assert any("sd_model_checkpoint" in notice for notice in app.notices)
    app.settings_store.change({"sd_model_checkpoint": "sub/model.safetensors [0123456789]"})  # names still work


def test_job_snapshot_does_not_change_under_a_running_job(data_dir):
    app = open_app()
    snapshot = app.settings_store.snapshot({"samples_format": "webp"})
    app.settings_store.change({"samples_format": "jpg", "jpeg_quality": 70})
    assert snapshot.samples_format == "webp" and snapshot.jpeg_quality == 80
    assert app.settings.samples_format == "jpg"
    with pytest.raises(InvalidRequest) as refused:
        app.settings_store.snapshot({"outdir_samples": "/tmp"})
    assert refused.value.field == "override_settings" and "outdir_samples" in str(refused.value)


# Values that were once saved and then failed every job or every GET /options (issue #19 class 2).
BAD_SAVED_VALUES = {
    "code_former_weight": float("nan"),
    "s_noise": float("inf"),
    "CLIP_stop_at_last_layers": 40,
    "samples_format": "../../x",
    "grid_format": "tiff",
    "jpeg_quality": 1000,
    "device": "banana",
    "some_extension_option": [1, {"deep": float("-inf")}],
}


@pytest.mark.parametrize(("name", "value"), list(BAD_SAVED_VALUES.items()))
def test_bad_option_is_refused_naming_it(data_dir, name, value):
    app = open_app()
    app.settings_store.change({"jpeg_quality": 70})
    before = (data_dir / "config.json").read_text()
    with pytest.raises(InvalidRequest) as refused:
        app.settings_store.change({name: value, "eta_ddim": 0.5})
    assert refused.value.field == name
    assert (data_dir / "config.json").read_text() == before, "nothing is saved"
    with pytest.raises(InvalidRequest) as refused:
        app.settings_store.snapshot({name: value})
    assert refused.value.field == "override_settings" and name in str(refused.value)


def test_saved_bad_values_fall_back_to_defaults_with_a_notice_each(data_dir):
    data_dir.mkdir(parents=True)
    saved = {**BAD_SAVED_VALUES, "device_id": 7, "jpeg_quality": 1000, "eta_ddim": 0.25, "kept_extension_option": 3}
    (data_dir / "config.json").write_text(json.dumps(saved))  # json writes NaN and Infinity as Python reads them
    app = open_app()
    options = app.settings.to_json_dict()
    json.dumps(options, allow_nan=False)  # what GET /options does: no NaN/Infinity left
    for name in BAD_SAVED_VALUES:
        assert any(f"option {name}:" in notice for notice in app.notices), name
        if name in Settings.model_fields:
            assert options[name] == Settings.model_fields[name].default, name
    assert "some_extension_option" not in options and "device_id" not in options
    assert any("device_id" in notice and "cuda:N" in notice for notice in app.notices)
    assert options["eta_ddim"] == 0.25 and options["kept_extension_option"] == 3


def test_image_format_names_are_read_as_the_saver_reads_them():
    assert Settings().merged({"samples_format": "PNG", "grid_format": ".JPEG"}).grid_format == "jpeg"
    assert Settings().merged({"samples_format": "PNG"}).samples_format == "png"


def test_device_must_exist_on_this_machine():
    import torch

    assert Settings().merged({"device": "cpu"}).device == "cpu"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(InvalidRequest) as refused:
        Settings().merged({"device": f"cuda:{count}"})
    assert refused.value.field == "device"
    with pytest.raises(InvalidRequest) as refused:
        Settings().merged({"device_id": 0})
    assert refused.value.field == "device_id" and "cuda:N" in str(refused.value)


@pytest.mark.parametrize("folder", ["outputs/afile", "outputs/afile/below", "config.json"])
def test_output_folder_that_cannot_hold_images_is_refused(data_dir, folder):
    app = open_app()
    (data_dir / "outputs" / "afile").write_text("a file, not a folder")
    app.settings_store.change({"jpeg_quality": 70})
    with pytest.raises(InvalidRequest) as refused:
        app.settings_store.change({"outdir_txt2img_samples": folder})
    assert refused.value.field == "outdir_txt2img_samples" and "is a file" in str(refused.value)
    assert app.settings.outdir_txt2img_samples == "outputs/txt2img-images"
    app.settings_store.change({"outdir_txt2img_samples": "outputs/new/deeper"})  # missing folders are made later


def test_saved_output_folder_that_became_a_file_falls_back_with_a_notice(data_dir):
    (data_dir / "outputs").mkdir(parents=True)
    (data_dir / "outputs" / "afile").write_text("x")
    (data_dir / "config.json").write_text(json.dumps({"outdir_grids": "outputs/afile"}))
    app = open_app()
    assert app.settings.outdir_grids == ""
    assert any("outdir_grids" in notice and "is a file" in notice for notice in app.notices)


def test_atomic_path_without_replace_keeps_an_existing_file(tmp_path):
    from sdstudio.config import atomic_path

    target = tmp_path / "model.safetensors"
    target.write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_path(target, replace=False) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    fresh = tmp_path / "fresh.safetensors"
    with atomic_path(fresh, replace=False) as tmp:
        tmp.write_text("new")
    assert fresh.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == [
        "fresh.safetensors",
        "model.safetensors",
    ]
