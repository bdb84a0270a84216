"""Imports point one way (STYLE.md): cli → launch → server, ui → app → training, extensions → engine →
postprocess, prompts → models → config. A lower layer never imports a higher one, and siblings stay apart."""

from __future__ import annotations

import ast
from pathlib import Path

import sdstudio

PACKAGE = Path(sdstudio.__file__).parent
LAYER = {
    "errors": 0, "validation": 0, "config": 0, "assets": 0, "__init__": 0,
    "models": 1,
    "prompts": 2, "postprocess": 2,
    "engine": 3,
    "extensions": 4, "training": 4,
    "app": 5,
    "server": 6, "ui": 6,
    "launch": 7,
    "cli": 8,
}  # fmt: skip
SIBLINGS = {frozenset(("server", "ui")), frozenset(("training", "extensions")), frozenset(("prompts", "postprocess"))}


def imported_layers(path: Path) -> list[tuple[int, str]]:
    """(line, sdstudio top-level module) for every sdstudio import in a file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names if name.startswith("sdstudio.")]
    return found


def test_every_module_imports_only_its_own_or_lower_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert layer in LAYER, f"{path}: a new top-level module needs a place in LAYER (and in STYLE.md)"
        for line, target in imported_layers(path):
            if target != layer and (LAYER[target] > LAYER[layer] or frozenset((layer, target)) in SIBLINGS):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line}: {layer} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)
