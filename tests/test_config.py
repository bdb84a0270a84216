"""Settings: A1111 names, unknown keys preserved, atomic writes, corrupt file recovery."""

from __future__ import annotations

import json

from sdstudio.app import open_app
from sdstudio.config import MODEL_KINDS, Settings, load_settings, resolve_data_dir, save_settings


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
    for key in ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "samples_format",
                "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_grids",
                "save_images_add_number", "enable_pnginfo", "eta_noise_seed_delta"):
        assert key in names


def test_unknown_keys_survive_a_save(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"samples_format": "jpg", "some_extension_option": [1, 2], "CLIP_stop_at_last_layers": 2}))
    settings = load_settings(path).settings
    assert settings.samples_format == "jpg"
    assert settings.CLIP_stop_at_last_layers == 2
    settings.eta_noise_seed_delta = 31337
    save_settings(settings, path)
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
    app.save_settings()
    assert json.loads((data_dir / "config.json").read_text())["samples_format"] == "png"


def test_wrongly_typed_option_is_treated_as_corrupt(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"CLIP_stop_at_last_layers": "many"}))
    loaded = load_settings(path)
    assert loaded.notice and "CLIP_stop_at_last_layers" in loaded.notice
