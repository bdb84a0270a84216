"""The `Script` base class: A1111's script contract (modules/scripts.py), method for method.

A script file (built in, in `DATA_DIR/scripts/`, or in `DATA_DIR/extensions/NAME/scripts/`)
defines `Script` subclasses; each is instantiated once per tab (txt2img, img2img). Its
`show(is_img2img)` decides where it appears: False (hidden), True (in the Script
dropdown: its `run` takes over processing when selected) or `AlwaysVisible` (always on:
its process hooks run on every job). `ui(is_img2img)` returns the controls whose values
become the script's arguments, in order: `run(p, *args)`, `process(p, *args)`...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sdstudio.engine.request import HIRES_IMAGE_UPSCALERS
from sdstudio.extensions.scripts.controls import Control

if TYPE_CHECKING:
    from sdstudio.engine.scripting import PostprocessImageArgs, Processed, StableDiffusionProcessing, UNetCallParams


class _AlwaysVisible:
    """The value `show()` returns for an always-on script (A1111 `scripts.AlwaysVisible`)."""

    def __repr__(self) -> str:
        return "AlwaysVisible"


AlwaysVisible = _AlwaysVisible()


@dataclass(frozen=True)
class ScriptLists:
    """The studio's lists a script's `ui()` offers as choices (A1111 reads them from `shared` as its UI is built)."""

    upscaler_names: Callable[[], list[str]] = field(default=lambda: list(HIRES_IMAGE_UPSCALERS))
    """The image upscalers in A1111's order (`shared.sd_upscalers`): None, Lanczos, Nearest, then the models."""


class Script:
    """One script; override what it needs. Hooks get the script's arguments after their own ones."""

    filename: str = ""  # set by the loader: the file it came from
    extension: str = ""  # set by the loader: the extension's folder name ("builtin" for sdstudio's own)
    is_txt2img: bool = False  # set by the loader: which tab this instance belongs to
    is_img2img: bool = False
    lists: ScriptLists = ScriptLists()  # set by the loader: what ui() may list

    infotext_fields: list[tuple[int, str]] = []
    """(argument index, infotext key) pairs: pasting an infotext with that key fills that argument."""

    def title(self) -> str:
        """The name shown in the Script dropdown (and, lowercased, what `script_name` matches)."""
        raise NotImplementedError

    def show(self, is_img2img: bool) -> bool | _AlwaysVisible:
        """False: hidden on this tab; True: selectable; AlwaysVisible: always on."""
        return True

    def ui(self, is_img2img: bool) -> list[Control]:
        """The script's controls; their values are its arguments, in this order."""
        return []

    def setup(self, p: StableDiffusionProcessing, *args: Any) -> None:
        """Once per request, before anything else."""

    def before_process(self, p: StableDiffusionProcessing, *args: Any) -> None:
        """Before the settings and model of a job are chosen (p's fields may still change anything)."""

    def process(self, p: StableDiffusionProcessing, *args: Any) -> None:
        """After p.all_prompts / p.all_seeds are set up; they may be changed here."""

    def before_process_batch(self, p: StableDiffusionProcessing, *args: Any, **kwargs: Any) -> None:
        """Before a batch's extra networks apply; kwargs: batch_number, prompts, seeds, subseeds."""

    def process_batch(self, p: StableDiffusionProcessing, *args: Any, **kwargs: Any) -> None:
        """Before a batch is encoded and sampled; kwargs: batch_number, prompts, seeds, subseeds."""

    def unet_kwargs(self, p: StableDiffusionProcessing, params: UNetCallParams, *args: Any) -> dict[str, Any] | None:
        """Each guided UNet call: extra UNet keyword arguments (ControlNet residuals, summed); None: none."""
        return None

    def postprocess_batch(self, p: StableDiffusionProcessing, *args: Any, **kwargs: Any) -> None:
        """After a batch is decoded; kwargs: images ([0, 1] tensor, B×C×H×W), batch_number."""

    def postprocess_image(self, p: StableDiffusionProcessing, pp: PostprocessImageArgs, *args: Any) -> None:
        """Each image before it is saved; set `pp.image` to replace it."""

    def postprocess(self, p: StableDiffusionProcessing, processed: Processed, *args: Any) -> None:
        """After the job, with its result."""

    def run(self, p: StableDiffusionProcessing, *args: Any) -> Processed | None:
        """A selected script's processing: call `process_images(p)` as needed; None means "process p as it is"."""
        return None

    def describe(self) -> str:
        """A short description (A1111 keeps it unused too)."""
        return ""
