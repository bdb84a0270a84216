"""The README's "Writing one" example extension works as the README says."""

from __future__ import annotations

import re
from pathlib import Path

from sdstudio.app import open_app
from sdstudio.engine.request import Txt2ImgRequest
from sdstudio.engine.scripting import ScriptSelection

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_extension_example_loads_runs_and_records_its_infotext(data_dir):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Writing one") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    target = data_dir / "extensions" / "sharpen" / "scripts" / "sharpen.py"
    target.parent.mkdir(parents=True)
    target.write_text(code, encoding="utf-8")
    app = open_app(data_dir)
    assert app.extensions.list()[0].scripts == ["Sharpen"] and app.extensions.list()[0].errors == []
    request = Txt2ImgRequest(prompt="a red circle", width=64, height=64, steps=2, sampler_name="Euler", seed=3)
    plain = app.engine.txt2img(request)
    sharpened = app.engine.txt2img(request, scripts=ScriptSelection(alwayson_scripts={"sharpen": {"args": [True, 2]}}))
    assert "Sharpen: 2" in sharpened.infotexts[0] and "Sharpen" not in plain.infotexts[0]
    assert sharpened.images[0].tobytes() != plain.images[0].tobytes()
