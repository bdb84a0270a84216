"""The Extras operations: upscale (one or two upscalers blended), GFPGAN, CodeFormer, save.

Follows A1111 modules/postprocessing.py with scripts/postprocessing_upscale.py,
postprocessing_gfpgan.py and postprocessing_codeformer.py, run in A1111's order (upscale,
then GFPGAN, then CodeFormer; A1111 >= 1.6 ignores `upscale_first`, and so do we).
The infotext keys are A1111's ("Postprocess upscale by", "Postprocess upscaler", ...).
Saved PNGs keep the source's text chunks, add the post-processing infotext as the
`postprocessing` and `extras` chunks (as A1111 writes) and also append it to the last
line of `parameters` (the source's generation infotext, extended; see `extend_parameters`).

Request fields carry the names of A1111's modules/api/models.py ExtrasBaseRequest so the
API server can pass its request through field by field.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.errors import InvalidRequest, NotFound, SdStudioError
from sdstudio.models.memory import ModelMemory
from sdstudio.postprocess.face_restoration import FaceRestorers
from sdstudio.postprocess.image_files import (
    IMAGE_EXTENSIONS,
    format_infotext_parameters,
    next_free_number,
    open_image,
    save_png,
    text_items,
)
from sdstudio.postprocess.upscalers import UpscalerRegistry
from sdstudio.validation import CheckedRequest


class ExtrasOptions(CheckedRequest):
    """What to do to each image (A1111 ExtrasBaseRequest fields and defaults); a bad value is an InvalidRequest."""

    model_config = ConfigDict(extra="forbid")

    resize_mode: Literal[0, 1] = 0
    """0: scale by `upscaling_resize`; 1: scale to `upscaling_resize_w` x `upscaling_resize_h`."""
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    codeformer_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    codeformer_weight: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    upscaling_resize: float = Field(default=2, gt=0, le=16, allow_inf_nan=False)
    upscaling_resize_w: int = Field(default=512, ge=1, le=16384)
    upscaling_resize_h: int = Field(default=512, ge=1, le=16384)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool = False
    """Accepted for A1111 API compatibility; A1111 >= 1.6 always upscales first."""


class NamedImage(BaseModel):
    """An image and the name it came with (its file name in batch mode), if any."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    image: Any
    name: str | None = None


class ExtrasSingleImageRequest(ExtrasOptions):
    """One image (A1111 ExtrasSingleImageRequest; `image` is a decoded PIL image here)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    image: Any


class ExtrasBatchImagesRequest(ExtrasOptions):
    """Several images (A1111 ExtrasBatchImagesRequest; `imageList` decoded, with names)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    imageList: list[NamedImage]


@dataclass
class ExtrasImageResult:
    """One processed image: the image, its post-processing infotext, where it was saved, notes."""

    image: Image.Image | None  # None when the request asked for no images back (show_extras_results)
    infotext: str
    source_name: str | None = None
    saved_path: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ExtrasResult:
    """All processed images; `html_info` is A1111's html of the last infotext."""

    images: list[ExtrasImageResult]
    notes: list[str] = field(default_factory=list)

    @property
    def html_info(self) -> str:
        return plaintext_to_html(self.images[-1].infotext if self.images else "")


def extend_parameters(parameters: str | None, postprocess_infotext: str) -> str:
    """The source's infotext with the post-processing keys appended to its last line.

    A1111 keeps `parameters` as is and shows the `postprocessing` chunk beside it; appending
    as well makes the post-processing visible to every reader of `parameters` (image
    browsers, `sdstudio pnginfo`), and readers that paste parameters ignore unknown keys.
    """
    if not parameters:
        return postprocess_infotext
    return f"{parameters.rstrip()}, {postprocess_infotext}"


def plaintext_to_html(text: str) -> str:
    """A1111 ui_common.plaintext_to_html."""
    return "<div class='infotext'>\n" + "".join(f"<p>{html.escape(line)}</p>\n" for line in text.split("\n")) + "</div>"


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


class PostprocessService:
    """Extras, upscaling and face restoration over one data dir (wired by sdstudio.app)."""

    def __init__(
        self, paths: DataPaths, settings: SettingsStore, upscalers: UpscalerRegistry, face_restorers: FaceRestorers
    ):
        self.paths = paths
        self.settings_store = settings
        self.upscalers = upscalers
        self.face_restorers = face_restorers

    @classmethod
    def build(cls, paths: DataPaths, settings: SettingsStore, memory: ModelMemory | None = None) -> PostprocessService:
        """The service with the default upscaler and face-restorer registries (device from the settings)."""
        device = settings.current.device
        upscalers = UpscalerRegistry(paths, settings, device=device, memory=memory)
        face_restorers = FaceRestorers(paths, settings, device=device, memory=memory)
        return cls(paths, settings, upscalers, face_restorers)

    @property
    def settings(self) -> Settings:
        """The settings in force now."""
        return self.settings_store.current

    # -- entry points ------------------------------------------------------------------

    def run_single(
        self, request: ExtrasSingleImageRequest, *, save: bool = False, outdir: str | os.PathLike | None = None
    ) -> ExtrasResult:
        """Process one image (A1111 extras_mode 0); saving is optional (the API does not save)."""
        if not isinstance(request.image, Image.Image):
            raise InvalidRequest("image", "an image is required")
        return self._run([NamedImage(image=request.image)], request, save=save, outdir=outdir)

    def run_batch(
        self, request: ExtrasBatchImagesRequest, *, save: bool = False, outdir: str | os.PathLike | None = None
    ) -> ExtrasResult:
        """Process a list of images (A1111 extras_mode 1)."""
        if not request.imageList:
            raise InvalidRequest("imageList", "at least one image is required")
        for index, item in enumerate(request.imageList):
            if not isinstance(item.image, Image.Image):
                raise InvalidRequest(f"imageList[{index}]", "not an image")
        return self._run(request.imageList, request, save=save, outdir=outdir)

    def run_files(
        self,
        files: Iterable[str | os.PathLike],
        options: ExtrasOptions,
        *,
        save: bool = True,
        outdir: str | os.PathLike | None = None,
    ) -> ExtrasResult:
        """Process image files (and the images inside any folders given) — A1111 extras_mode 2."""
        paths = list(_expand_inputs(files))
        if not paths:
            raise InvalidRequest("images", "no image files found in the given paths")
        notes: list[str] = []
        limit = self.settings.img_max_decode_mp

        def opened() -> Iterator[NamedImage]:
            for path in paths:
                try:
                    yield NamedImage(image=open_image(path, max_megapixels=limit), name=str(path))
                except SdStudioError as exc:
                    notes.append(f"skipped: {exc}")  # A1111 skips unreadable files in a batch

        result = self._run(opened(), options, save=save, outdir=outdir)
        result.notes = notes + result.notes
        return result

    # -- processing --------------------------------------------------------------------

    def _run(self, items: Iterable[NamedImage], options: ExtrasOptions, *, save: bool, outdir) -> ExtrasResult:
        self._check_names(options)
        folder = self._output_folder(outdir) if save else None
        results = []
        for item in items:
            image, info, notes = self.process_image(item.image, options)
            infotext = format_infotext_parameters(info)  # as A1111 postprocessing.py joins `pp.info`
            result = ExtrasImageResult(image=image, infotext=infotext, source_name=item.name, notes=notes)
            if folder is not None:
                result.saved_path = self._save(image, item, infotext, folder)
            if not options.show_extras_results:
                result.image = None  # A1111: results not returned
            results.append(result)
        return ExtrasResult(images=results, notes=[n for r in results for n in r.notes])

    def process_image(
        self, image: Image.Image, options: ExtrasOptions
    ) -> tuple[Image.Image, dict[str, Any], list[str]]:
        """Run the Extras steps on one image: 1. upscale, 2. GFPGAN, 3. CodeFormer."""
        source_items = text_items(image)
        image = image.convert("RGB")
        image.info = {}
        info: dict[str, Any] = {}
        notes: list[str] = []
        image = self._step_upscale(image, options, info)
        image = self._step_face_restore(image, "GFPGAN", options.gfpgan_visibility, None, info, notes)
        image = self._step_face_restore(
            image, "CodeFormer", options.codeformer_visibility, options.codeformer_weight, info, notes
        )
        image.info = dict(source_items.items())  # .items(): PIL types info with wider keys
        return image, info, notes

    def _step_upscale(self, image: Image.Image, options: ExtrasOptions, info: dict[str, Any]) -> Image.Image:
        """A1111 ScriptPostprocessingUpscale.process."""
        if options.upscaler_1 == "None":
            return image
        if options.resize_mode == 1:
            scale = max(options.upscaling_resize_w / image.width, options.upscaling_resize_h / image.height)
            info["Postprocess upscale to"] = f"{options.upscaling_resize_w}x{options.upscaling_resize_h}"
        else:
            scale = options.upscaling_resize
            info["Postprocess upscale by"] = _number(scale)
        upscaled = self._upscale_and_crop(image, options.upscaler_1, scale, options, info)
        info["Postprocess upscaler"] = options.upscaler_1
        if options.upscaler_2 != "None" and options.extras_upscaler_2_visibility > 0:
            second = self._upscale_and_crop(image, options.upscaler_2, scale, options, info)
            if second.size != upscaled.size:  # different models can round differently
                second = second.resize(upscaled.size, Image.Resampling.LANCZOS)
            upscaled = Image.blend(upscaled, second, options.extras_upscaler_2_visibility)
            info["Postprocess upscaler 2"] = options.upscaler_2
        return upscaled

    def _upscale_and_crop(
        self, image: Image.Image, name: str, scale: float, options: ExtrasOptions, info: dict[str, Any]
    ) -> Image.Image:
        upscaled = self.upscalers.upscale(image, scale=scale, name=name)
        if options.resize_mode == 1 and options.upscaling_crop:
            width, height = options.upscaling_resize_w, options.upscaling_resize_h
            cropped = Image.new("RGB", (width, height))
            cropped.paste(upscaled, box=(width // 2 - upscaled.width // 2, height // 2 - upscaled.height // 2))
            upscaled = cropped
            info["Postprocess crop to"] = f"{width}x{height}"
        return upscaled

    def _step_face_restore(
        self, image, name: str, visibility: float, weight: float | None, info: dict[str, Any], notes: list[str]
    ) -> Image.Image:
        """A1111 ScriptPostprocessingGfpGan / ScriptPostprocessingCodeFormer.process."""
        if visibility == 0:
            return image
        result = self.face_restorers.restore(image, name, visibility=visibility, codeformer_weight=weight)
        if result.note:
            notes.append(f"{name}: {result.note}")
        info[f"{name} visibility"] = round(visibility, 3)
        if name == "CodeFormer":
            info["CodeFormer weight"] = round(weight or 0.0, 3)
        return result.image

    def _check_names(self, options: ExtrasOptions) -> None:
        """Fail before any work when an upscaler name is unknown (the error lists the available ones)."""
        if options.upscaler_1 != "None":
            self.upscalers.get(options.upscaler_1, field="upscaler_1")
        if options.upscaler_2 != "None" and options.extras_upscaler_2_visibility > 0:
            self.upscalers.get(options.upscaler_2, field="upscaler_2")

    # -- saving ------------------------------------------------------------------------

    def _output_folder(self, outdir) -> Path:
        """--outdir (the local user's choice) if given, else outdir_samples or outdir_extras_samples in the data dir."""
        if outdir:
            return Path(outdir).expanduser().resolve()
        chosen = self.settings.outdir_samples or self.settings.outdir_extras_samples
        try:
            return self.paths.resolve_inside(chosen)
        except ValueError as exc:
            raise InvalidRequest("outdir_extras_samples", str(exc)) from None

    def _save(self, image: Image.Image, item: NamedImage, infotext: str, folder: Path) -> Path:
        """PNG named NNNNN.png, or after its source file in batch mode (A1111 use_original_name_batch)."""
        folder.mkdir(parents=True, exist_ok=True)
        if item.name:
            stem = Path(item.name).stem
            path = folder / f"{stem}.png"
            counter = 1
            while path.exists():  # never overwrite earlier work
                path = folder / f"{stem}-{counter}.png"
                counter += 1
        else:
            number = next_free_number(folder)
            path = folder / f"{number:05}.png"
            while path.exists():
                number += 1
                path = folder / f"{number:05}.png"
        items = text_items(image) if self.settings.enable_pnginfo else {}  # process_image left only these in image.info
        if self.settings.enable_pnginfo and infotext:
            items["parameters"] = extend_parameters(items.get("parameters"), infotext)
            items["postprocessing"] = infotext
            items["extras"] = infotext
        return save_png(image, path, items)


def _expand_inputs(inputs: Iterable[str | os.PathLike]) -> Iterator[Path]:
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.exists():
            yield path
        else:
            raise NotFound(f"images: no such file or folder {str(raw)!r}")
