"""Named prompt styles kept in `styles.csv`, in A1111's file format and with A1111's rules.

The file has the columns `name,prompt,negative_prompt` (A1111 also reads the older
`name,text` layout) and is written as UTF-8 with a BOM, as A1111 writes it, so the same file
works in both programs. A style's text either contains `{prompt}`, which is replaced by the
user's prompt, or is appended after ", ". Applying styles and taking them back out of a
prompt (for pasted infotext) follow A1111's `modules/styles.py`.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sdstudio.config import atomic_write_bytes
from sdstudio.errors import InvalidRequest, ModelLoadError

logger = logging.getLogger(__name__)

PROMPT_PLACEHOLDER = "{prompt}"
CSV_FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class PromptStyle:
    """One row of styles.csv."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompts(style_text: str, prompt: str) -> str:
    """Put `prompt` into a style's text: at `{prompt}`, else joined after it with ", " (A1111)."""
    if PROMPT_PLACEHOLDER in style_text:
        return style_text.replace(PROMPT_PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def unwrap_style_text(style_text: str, prompt: str) -> tuple[bool, str]:
    """If `prompt` is `style_text` applied to something, return (True, that something)."""
    if PROMPT_PLACEHOLDER in style_text:
        parts = style_text.split(PROMPT_PLACEHOLDER)
        if len(parts) != 2:  # several placeholders: A1111 cannot tell either
            return False, prompt
        left, right = parts
        if prompt.startswith(left) and prompt.endswith(right) and len(prompt) >= len(left) + len(right):
            return True, prompt[len(left) : len(prompt) - len(right)]
        return False, prompt
    if prompt.endswith(style_text):
        inner = prompt[: len(prompt) - len(style_text)]
        return True, inner[:-2] if inner.endswith(", ") else inner
    return False, prompt


class StyleDatabase:
    """The styles of one `styles.csv`: read on construction, changed in memory, saved on request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.styles: dict[str, PromptStyle] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again (a missing file means no styles)."""
        self.styles = {}
        if not self.path.exists():
            return
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{self.path}: cannot read styles ({exc}); fix or remove the file") from exc
        try:
            rows = list(csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True))
        except csv.Error as exc:
            raise ModelLoadError(f"{self.path}: not a valid styles CSV ({exc}); fix or remove the file") from exc
        for row in rows:
            name = row.get("name")
            if not name:
                continue
            prompt = row.get("prompt") if "prompt" in row else row.get("text")  # old "name,text" files
            self.styles[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")

    def save(self, path: str | Path | None = None) -> Path:
        """Write the styles (A1111 columns, UTF-8 with BOM), keeping the previous file as NAME.bak."""
        target = Path(path) if path is not None else self.path
        if target.exists():
            shutil.copy2(target, target.with_name(target.name + ".bak"))
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for style in self.styles.values():
            writer.writerow({"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt})
        atomic_write_bytes(target, buffer.getvalue().encode("utf-8-sig"))
        return target

    def names(self) -> list[str]:
        """Style names in file order."""
        return list(self.styles)

    def set_style(self, style: PromptStyle) -> None:
        """Add a style or replace the one with the same name."""
        if not style.name.strip():
            raise InvalidRequest("name", "a style needs a name")
        self.styles[style.name] = style

    def delete_style(self, name: str) -> None:
        """Remove a style; unknown names are ignored."""
        self.styles.pop(name, None)

    def _styles_named(self, names: list[str]) -> list[PromptStyle]:
        found = []
        for name in names:
            style = self.styles.get(name)
            if style is None:
                logger.warning("style %r is not in %s; it is ignored", name, self.path)
                style = PromptStyle(name)  # A1111 applies an empty style (which trims the prompt)
            found.append(style)
        return found

    def apply_styles(self, prompt: str, negative_prompt: str, names: list[str]) -> tuple[str, str]:
        """Apply the named styles in order to the prompt and the negative prompt."""
        for style in self._styles_named(names):
            prompt = merge_prompts(style.prompt, prompt)
            negative_prompt = merge_prompts(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt

    def extract_styles(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """Find styles applied to a prompt pair and take them out: (names, prompt, negative)."""
        found: list[str] = []
        candidates = [s for s in self.styles.values() if s.prompt or s.negative_prompt]
        while True:
            for style in candidates:
                matched, inner = unwrap_style_text(style.prompt, prompt)
                if not matched:
                    continue
                matched, inner_negative = unwrap_style_text(style.negative_prompt, negative_prompt)
                if not matched:
                    continue
                prompt, negative_prompt = inner, inner_negative
                candidates.remove(style)
                found.append(style.name)
                break
            else:
                break
        return list(reversed(found)), prompt, negative_prompt
