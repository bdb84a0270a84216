"""Extensions' browser files, in A1111's layout: `javascript/*.js` (`*.mjs` as modules) and `style.css`.

A1111 links them into its page; here they go inline into Gradio's `head` (read once, when the
page is built, for the enabled extensions in name order), after sdstudio's own scripts, so an
extension's script finds `gradioApp()`, `onUiLoaded()` and `onUiUpdate()` as in A1111. A file that
cannot be read is left out and named, with its extension, in `PageAssets.problems`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE_HOOKS_SCRIPT = Path(__file__).resolve().parent.parent / "assets" / "javascript" / "page_hooks.js"


@dataclass(frozen=True)
class PageAssets:
    """What the enabled extensions add to the page's head, and what could not be added."""

    head: str = ""
    problems: tuple[tuple[str, str], ...] = ()  # (extension, message)


def inline_script(source: str, module: bool = False) -> str:
    """`source` as a `<script>` element (a `</script>` inside it cannot end the element early)."""
    kind = ' type="module"' if module else ""
    escaped = re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE)
    return f"<script{kind}>\n{escaped}\n</script>\n"


def inline_style(source: str) -> str:
    """`source` as a `<style>` element."""
    escaped = re.sub(r"</(style)", r"<\\/\1", source, flags=re.IGNORECASE)
    return f"<style>\n{escaped}\n</style>\n"


def page_hooks_script() -> str:
    """sdstudio's own A1111 page helpers (gradioApp, onUiLoaded, onUiUpdate, onAfterUiUpdate)."""
    return inline_script(PAGE_HOOKS_SCRIPT.read_text(encoding="utf-8"))


def _extension_files(folder: Path) -> list[Path]:
    scripts = folder / "javascript"
    found = sorted(scripts.glob("*.js")) + sorted(scripts.glob("*.mjs")) if scripts.is_dir() else []
    style = folder / "style.css"
    return [*found, style] if style.exists() or style.is_symlink() else found


def extension_page_assets(folders: Sequence[Path]) -> PageAssets:
    """The scripts and style sheets of the extensions in `folders` (the enabled ones), as head elements."""
    parts = []
    problems = []
    for folder in folders:
        for path in _extension_files(folder):
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = (
                    "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"{type(exc).__name__}: {exc}"
                )
                relative = path.relative_to(folder).as_posix()
                problems.append((folder.name, f"{relative} cannot be read ({reason}); the page is built without it"))
                continue
            if path.suffix == ".css":
                parts.append(inline_style(source))
            else:
                parts.append(inline_script(source, module=path.suffix == ".mjs"))
    return PageAssets("".join(parts), tuple(problems))
