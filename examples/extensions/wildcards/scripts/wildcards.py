"""Wildcards: `__name__` becomes a random line of wildcards/name.txt, `{a|b|c}` one of its variants.

An always-on script (like A1111's wildcards extension): in `process`, after the prompts and
seeds are set up, every image's prompt is rewritten with a random generator seeded by that
image's seed, so a seed always gives the same substitutions and an infotext reproduces its
image. The template is recorded in the infotext as "Wildcard prompt".
"""

import random
import re
from pathlib import Path

from sdstudio.extensions.scripts import AlwaysVisible, Checkbox, Script

WILDCARD = re.compile(r"__([\w\-/ ]+?)__")
VARIANTS = re.compile(r"\{([^{}]*\|[^{}]*)\}")
MAX_ROUNDS = 20  # a wildcard file may contain wildcards; this bounds self-reference


class Wildcards(Script):
    infotext_fields = []

    def title(self):
        return "Wildcards"

    def show(self, is_img2img):
        return AlwaysVisible

    def ui(self, is_img2img):
        return [Checkbox(label="Replace __wildcards__ and {a|b} variants", value=True)]

    def folder(self):
        return Path(self.filename).resolve().parents[1] / "wildcards"

    def choices(self, name):
        path = (self.folder() / f"{name}.txt").resolve()
        if self.folder() not in path.parents or not path.is_file():
            return None  # unknown (or outside the folder): left as written
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line and not line.startswith("#")] or None

    def expand(self, text, rng):
        for _ in range(MAX_ROUNDS):
            before = text
            text = VARIANTS.sub(lambda m: rng.choice(m.group(1).split("|")), text)
            text = WILDCARD.sub(lambda m: rng.choice(self.choices(m.group(1)) or [m.group(0)]), text)
            if text == before:
                break
        return text

    def process(self, p, enabled):
        if not enabled:
            return
        templates = list(p.all_prompts)
        if not any(WILDCARD.search(t) or VARIANTS.search(t) for t in templates + list(p.all_negative_prompts)):
            return
        p.all_prompts = [self.expand(t, random.Random(seed)) for t, seed in zip(templates, p.all_seeds)]
        p.all_negative_prompts = [
            self.expand(t, random.Random(seed + 1)) for t, seed in zip(p.all_negative_prompts, p.all_seeds)
        ]
        p.extra_generation_params["Wildcard prompt"] = templates[0]
