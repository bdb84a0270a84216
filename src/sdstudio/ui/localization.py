"""A1111's localizations: `localizations/NAME.json` files that map the page's English text to another language.

They come from sdstudio's own folder (assets/localizations: zh_CN, always offered), DATA_DIR/localizations
and each enabled extension's `localizations/` folder. Files of one name are merged in that order, so a
file in the data dir or an extension adds to (or corrects) the bundled one, as A1111 merges a name's files.
The `localization` setting chooses one; the browser applies it (assets/javascript/localization.js): every
label, button, tab name, placeholder and title whose text is a key shows the value instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NO_LOCALIZATION = "None"  # the setting's value for the page's own English
BUNDLED_LOCALIZATIONS = Path(__file__).resolve().parent.parent / "assets" / "localizations"
LOCALIZATION_SCRIPT = Path(__file__).resolve().parent.parent / "assets" / "javascript" / "localization.js"


def localization_name(path: Path) -> str:
    """The name a file is offered under (A1111's: the file stem without spaces, "(x)" as "_x")."""
    return path.stem.replace(" ", "").replace("(", "_").replace(")", "")


def localization_files(folders: Sequence[Path]) -> dict[str, list[Path]]:
    """Each localization's files, by name, in the order of `folders` (later files override earlier keys)."""
    found: dict[str, list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
            if path.suffix.lower() == ".json" and path.is_file():
                found.setdefault(localization_name(path), []).append(path)
    return found


def read_localization(files: Sequence[Path]) -> tuple[dict[str, Any], list[str]]:
    """The merged mapping of `files` and the problems of those that could not be read (they are left out)."""
    merged: dict[str, Any] = {}
    problems = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: cannot be read as JSON ({type(exc).__name__}: {exc})")
            continue
        if not isinstance(data, dict):
            problems.append(f"{path}: must hold one JSON object of English text to translated text")
            continue
        merged.update(data)
    return merged, problems


def localization_for(name: str, folders: Sequence[Path]) -> dict[str, Any]:
    """The mapping the page applies for setting value `name` ({} for "None" or a name no folder has)."""
    if not name or name == NO_LOCALIZATION:
        return {}
    files = localization_files(folders).get(name, [])
    if not files:
        log.warning("localization %r: no localizations/%s.json was found; the page stays in English", name, name)
    data, problems = read_localization(files)
    for problem in problems:
        log.warning("localization %r: %s", name, problem)
    return data


def localization_script() -> str:
    """The page's script that applies a localization (a `<script>` element for Gradio's head)."""
    from sdstudio.ui.page_assets import inline_script

    return inline_script(LOCALIZATION_SCRIPT.read_text(encoding="utf-8"))
