"""`sdstudio extensions` and `--script`: the wildcards example installed and used the way the README says."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from sdstudio.cli.main import main
from sdstudio.engine.saving import read_infotext

REPO = Path(__file__).resolve().parents[2]
WILDCARDS = REPO / "examples" / "extensions" / "wildcards"
SMALL = ["--W", "64", "--H", "64", "--steps", "2", "--sampler", "Euler", "--no-progress"]


def infotexts(out: str) -> list[str]:
    texts = []
    for line in out.splitlines():
        if line.endswith(".png") and "grids" not in line:
            with Image.open(line) as image:
                texts.append(read_infotext(image))
    return texts


def test_wildcards_example_installs_and_gives_recorded_substitutions_per_seed(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert main(["--data-dir", data, "extensions", "install", str(WILDCARDS)]) == 0
    assert "installed wildcards" in capsys.readouterr().out
    assert main(["--data-dir", data, "extensions", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["enabled"], listed["scripts"], listed["errors"]) == (
        "wildcards",
        True,
        ["Wildcards"],
        [],
    )

    template = "a __color__ __shape__ on a {blue|green|white} background"
    assert main(["--data-dir", data, "txt2img", template, "--seed", "100", "--n_samples", "4", *SMALL]) == 0
    first = infotexts(capsys.readouterr().out)
    prompts = [text.splitlines()[0] for text in first]
    assert len(prompts) == 4 and len(set(prompts)) > 1  # each seed draws its own
    for prompt, text in zip(prompts, first):
        assert re.fullmatch(
            r"a (red|green|blue|yellow) (circle|square|triangle) on a (blue|green|white) background", prompt
        )
        assert f'Wildcard prompt: "{template}"' in text or f"Wildcard prompt: {template}" in text
    # The same seed gives the same substitution again.
    assert main(["--data-dir", data, "txt2img", template, "--seed", "102", *SMALL]) == 0
    again = infotexts(capsys.readouterr().out)
    assert again[0].splitlines()[0] == prompts[2]

    # Disabled, the template reaches the prompt as written; the choice lasts across runs (config.json).
    assert main(["--data-dir", data, "extensions", "disable", "wildcards"]) == 0
    capsys.readouterr()
    assert main(["--data-dir", data, "txt2img", template, "--seed", "100", *SMALL]) == 0
    assert infotexts(capsys.readouterr().out)[0].splitlines()[0] == template


def test_script_flags_are_checked_before_any_model_loads(tmp_path, capsys):
    data = str(tmp_path / "data")
    code = main(["--data-dir", data, "txt2img", "x", "--script", "no such script", *SMALL])
    assert code == 2 and "script_name: script 'no such script' is not installed" in capsys.readouterr().err
    code = main(["--data-dir", data, "txt2img", "x", "--script", "x", "--script-args", "[1,", *SMALL])
    assert code == 2 and "--script-args: not valid JSON" in capsys.readouterr().err
