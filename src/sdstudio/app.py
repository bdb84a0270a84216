"""The composition root: the one place that builds sdstudio's services from Settings.

Front ends (CLI, API server, web UI) call `open_app` and use the services it holds;
no other module constructs services or reads config.json on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sdstudio.config import DataPaths, Settings, load_settings, resolve_data_dir, save_settings


@dataclass
class App:
    """The services of one running sdstudio, built over one data dir."""

    paths: DataPaths
    settings: Settings
    notices: list[str] = field(default_factory=list)

    def save_settings(self) -> None:
        """Persist the current settings to config.json (atomically)."""
        save_settings(self.settings, self.paths.config_file)


def open_app(data_dir: str | os.PathLike | None = None) -> App:
    """Create the data dir layout if needed, load settings, and wire the services."""
    paths = DataPaths(resolve_data_dir(data_dir)).ensure()
    loaded = load_settings(paths.config_file)
    notices = [loaded.notice] if loaded.notice else []
    return App(paths=paths, settings=loaded.settings, notices=notices)
