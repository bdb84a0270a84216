"""img2img over a folder of images: A1111's img2img "Batch" tab (modules/img2img.py process_batch).

Every image file under the input folder is run through the ordinary img2img path
(`GenerationService.img2img`) with the same settings, one job per file, sharing one cancel
token so Interrupt stops the whole batch and Skip abandons the current file. As A1111:

- the seed is fixed once before the first file, so every file starts from the same noise;
- with a mask folder, each image takes the mask with the same file stem (a folder holding a
  single file gives that mask to every image); an image without one is skipped with a warning;
- with an output folder, each result is saved there under its input's name (`cat.png`, or
  `cat-1.png`, `cat-2.png`... when a file makes several images; a name already taken gets a
  number suffix, never overwritten), with the infotext inside as for every image; without one,
  images are saved as any img2img image, in the img2img output folder;
- "PNG info": the listed parameters are taken from each input's own infotext (its prompt is
  appended to the given prompt).

Unlike A1111, a file that cannot be read is skipped with a warning naming it, never a crash.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from sdstudio.config import Settings, atomic_write_bytes
from sdstudio.engine.saving import encode_image, read_infotext
from sdstudio.errors import InvalidRequest

if TYPE_CHECKING:  # torch comes with these: imported when a batch is built, not when its options are listed
    from sdstudio.engine.job_context import ProgressEvent
    from sdstudio.engine.request import GenerationResult, Img2ImgRequest
    from sdstudio.engine.scripting import ScriptSelection
    from sdstudio.engine.service import GenerationControl, GenerationService

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
"""Files a batch picks up (A1111 v1.10's list); other files in the folder are left alone."""

PNG_INFO_PROPS = ("Prompt", "Negative prompt", "Seed", "CFG scale", "Sampler", "Steps")
"""Parameters "PNG info" can take from each input's infotext (A1111's choices but Model hash)."""

RESULTS_SHOWN = 32
"""Images a batch hands back to show (A1111's img2img_batch_show_results_limit); all are saved."""

INPUT_FIELD = "img2img_batch_input_dir"
OUTPUT_FIELD = "img2img_batch_output_dir"
MASK_FIELD = "img2img_batch_inpaint_mask_dir"

# Fields a batch sets per file; the shared fields must not carry them.
_PER_FILE_FIELDS = ("init_images", "mask")


@dataclass
class BatchItem:
    """What became of one input file: its result and saved files, or why it was skipped."""

    source: Path
    result: GenerationResult | None = None  # None: skipped
    saved_paths: list[Path] = field(default_factory=list)
    warning: str = ""


@dataclass
class Img2ImgBatch:
    """An img2img job over a folder: the request fields every file shares, and the folders."""

    fields: dict[str, Any]
    input_dir: Path
    output_dir: Path | None = None  # None: the normal img2img output folder, normal names
    mask_dir: Path | None = None
    png_info_props: tuple[str, ...] = ()  # empty: PNG info off
    files: list[Path] = field(default_factory=list)  # the input files, listed when the batch is created

    @classmethod
    def create(
        cls,
        fields: dict[str, Any],
        input_dir: str | Path,
        output_dir: str | Path | None = None,
        mask_dir: str | Path | None = None,
        png_info_props: tuple[str, ...] | list[str] = (),
    ) -> Img2ImgBatch:
        """Check the folders and the shared fields before any file is read (a mistake costs nothing)."""
        from sdstudio.engine.request import Img2ImgRequest

        fields = {k: v for k, v in fields.items() if k not in _PER_FILE_FIELDS}
        # One request with a stand-in image checks every shared field (sizes, sampler...) now.
        Img2ImgRequest(**fields, init_images=[Image.new("RGB", (8, 8))])
        unknown = [p for p in png_info_props if p not in PNG_INFO_PROPS]
        if unknown:
            raise InvalidRequest(
                "img2img_batch_png_info_props",
                f"unknown parameter {unknown[0]!r}; choose from {', '.join(PNG_INFO_PROPS)}",
            )
        output = _folder_text(output_dir)
        if output is not None and output.exists() and not output.is_dir():
            raise InvalidRequest(OUTPUT_FIELD, f"{output} is a file, not a folder")
        mask = _folder_text(mask_dir)
        batch = cls(
            fields=fields,
            input_dir=_existing_folder(_folder_text(input_dir), INPUT_FIELD),
            output_dir=output,
            mask_dir=_existing_folder(mask, MASK_FIELD) if mask is not None else None,
            png_info_props=tuple(png_info_props),
        )
        batch.files = batch.sources()
        if not batch.files:
            raise InvalidRequest(INPUT_FIELD, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {batch.input_dir}")
        return batch

    @property
    def override_settings(self) -> dict[str, Any]:
        """The settings overrides of every file's job (front ends pin the checkpoint here)."""
        overrides: dict[str, Any] = self.fields.get("override_settings") or {}
        return overrides

    @override_settings.setter
    def override_settings(self, value: dict[str, Any]) -> None:
        self.fields["override_settings"] = dict(value)

    def sources(self) -> list[Path]:
        """The image files to process, in natural order (subfolders too, hidden ones and the output folder not)."""
        output = self.output_dir.resolve() if self.output_dir is not None else None
        found: list[Path] = []
        for root, subfolders, files in os.walk(self.input_dir):
            folder = Path(root)
            subfolders[:] = [
                name for name in subfolders if not name.startswith(".") and (folder / name).resolve() != output
            ]
            found.extend(
                folder / name for name in files if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
            )
        return sorted(found, key=lambda path: _natural_key(path.relative_to(self.input_dir).as_posix()))

    def run(
        self,
        engine: GenerationService,
        control: GenerationControl | None = None,
        scripts: ScriptSelection | None = None,
    ) -> GenerationResult:
        """Process every file, each with `scripts`; one result: the images to show, the saved paths, the warnings."""
        from sdstudio.engine.request import GenerationResult

        total = GenerationResult()
        for item in self.items(engine, control, scripts):
            if item.warning:
                _add_warning(total, item.warning)
            total.saved_paths.extend(item.saved_paths)
            if item.result is None:
                continue
            result = item.result
            for warning in result.warnings:
                _add_warning(total, warning)
            first = result.index_of_first_image
            room = max(0, RESULTS_SHOWN - (len(total.images)))
            total.images.extend(result.images[first:][:room])
            for name in ("infotexts", "seeds", "subseeds", "prompts", "negative_prompts"):
                getattr(total, name).extend(getattr(result, name)[:room])
            total.interrupted = total.interrupted or result.interrupted
        return total

    def items(
        self,
        engine: GenerationService,
        control: GenerationControl | None = None,
        scripts: ScriptSelection | None = None,
    ) -> Iterator[BatchItem]:
        """Process the files one by one, each with `scripts` (as A1111), yielding each outcome; stops if interrupted."""
        from sdstudio.engine.seeds import fixed_seed
        from sdstudio.engine.service import GenerationControl

        control = control or GenerationControl()
        sources = self.files or self.sources()
        masks = self._masks()
        fields = dict(self.fields)
        fields["seed"] = fixed_seed(fields.get("seed", -1))  # A1111 fix_seed: every file from the same noise
        fields["subseed"] = fixed_seed(fields.get("subseed", -1))
        fields["do_not_save_grid"] = True  # a grid per input file is clutter
        if self.output_dir is not None:
            fields["do_not_save_samples"] = True  # saved below, under the input's name
        n_iter = int(fields.get("n_iter", 1))
        limit = engine.settings_store.current.img_max_decode_mp
        for number, source in enumerate(sources):
            if control.cancel.interrupted:
                return
            try:
                request = self._request(fields, source, masks, limit)
            except InvalidRequest as exc:
                yield BatchItem(source, warning=f"skipped {source}: {exc.reason}")
                continue
            job = GenerationControl(
                cancel=control.cancel,
                on_progress=_offset_progress(control.on_progress, number * n_iter, len(sources) * n_iter),
                preview_every=control.preview_every,
            )
            try:
                result = engine.img2img(request, job, scripts)
            except InvalidRequest as exc:  # this file's problem (an empty mask...): the others may be fine
                yield BatchItem(source, warning=f"skipped {source}: {exc}")
                continue
            saved = self._save(engine, request, result, source) if self.output_dir is not None else result.saved_paths
            yield BatchItem(source, result, list(saved))
            if result.interrupted or control.cancel.interrupted:
                return

    def _masks(self) -> list[Path]:
        if self.mask_dir is None:
            return []
        return sorted((p for p in self.mask_dir.iterdir() if p.is_file()), key=lambda p: _natural_key(p.name))

    def _request(
        self, fields: dict[str, Any], source: Path, masks: list[Path], max_megapixels: float
    ) -> Img2ImgRequest:
        """The request for one file: its image, its mask, and its PNG info when asked for."""
        from sdstudio.engine.request import Img2ImgRequest, decode_image

        image = decode_image(source, INPUT_FIELD, max_megapixels)
        mask = None
        if masks:
            matching = masks if len(masks) == 1 else [m for m in masks if m.name.startswith(f"{source.stem}.")]
            if not matching:
                raise InvalidRequest(MASK_FIELD, f"no mask named {source.stem}.* in {self.mask_dir}")
            mask = decode_image(matching[0], MASK_FIELD, max_megapixels)
        if self.png_info_props:
            fields = {**fields, **_png_info_fields(image, fields, self.png_info_props)}
        return Img2ImgRequest(**fields, init_images=[image], mask=mask)

    def _save(
        self, engine: GenerationService, request: Img2ImgRequest, result: GenerationResult, source: Path
    ) -> list[Path]:
        """Write each image of `result` into the output folder under the input's name, infotext inside."""
        assert self.output_dir is not None
        settings = engine.settings_store.snapshot(request.override_settings)
        images = result.images[result.index_of_first_image :]
        several = request.total_images > 1
        return [
            _save_named(image, self.output_dir, f"{source.stem}-{n + 1}" if several else source.stem, text, settings)
            for n, (image, text) in enumerate(zip(images, result.infotexts, strict=False))
        ]


def _folder_text(value: str | Path | None) -> Path | None:
    """A folder from a text box or an option: blank = none given."""
    if value is None or not str(value).strip():
        return None
    return Path(str(value).strip()).expanduser()


def _existing_folder(folder: Path | None, field_name: str) -> Path:
    if folder is None:
        raise InvalidRequest(field_name, "give the folder of images to process")
    if not folder.exists():
        raise InvalidRequest(field_name, f"{folder}: no such folder")
    if not folder.is_dir():
        raise InvalidRequest(field_name, f"{folder} is a file, not a folder")
    try:
        next(folder.iterdir(), None)
    except OSError as exc:
        raise InvalidRequest(field_name, f"{folder}: cannot read it ({exc.strerror or exc})") from None
    return folder


def _natural_key(text: str) -> list[Any]:
    """Sort key putting img2 before img10 (A1111's natural sort)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _png_info_fields(image: Image.Image, fields: dict[str, Any], props: tuple[str, ...]) -> dict[str, Any]:
    """Fields from the input's own infotext (A1111's "PNG info"): its prompts appended, the rest replacing."""
    from sdstudio.engine.infotext import parse_generation_parameters

    text = read_infotext(image)
    params = {k: v for k, v in parse_generation_parameters(text).items() if k in props} if text else {}
    taken: dict[str, Any] = {}
    for key, name in (("Prompt", "prompt"), ("Negative prompt", "negative_prompt")):
        if params.get(key):
            taken[name] = " ".join(part for part in (str(fields.get(name) or ""), params[key]) if part)
    for key, name, convert in (("Seed", "seed", int), ("CFG scale", "cfg_scale", float), ("Steps", "steps", int)):
        if key in params:
            try:
                taken[name] = convert(params[key])
            except ValueError:
                continue
    if "Sampler" in params:
        taken["sampler_name"] = params["Sampler"]
        taken["scheduler"] = params.get("Schedule type", "Automatic")
    return taken


def _offset_progress(
    on_progress: Callable[[ProgressEvent], None] | None, before: int, count: int
) -> Callable[[ProgressEvent], None] | None:
    """Progress of one file's job counted within the whole batch (image batch 4/9, not 1/3)."""
    if on_progress is None:
        return None
    report = on_progress

    def forward(event: ProgressEvent) -> None:
        report(replace(event, job_no=before + event.job_no, job_count=count))

    return forward


def _save_named(image: Image.Image, folder: Path, stem: str, infotext: str, settings: Settings) -> Path:
    """Save as `folder/stem.ext`; a taken name gets -1, -2... (A1111's "Add number suffix")."""
    ext = (settings.samples_format or "png").lower()
    data = encode_image(
        image, ext, infotext if settings.enable_pnginfo else None, settings.jpeg_quality, settings.webp_lossless
    )
    path = folder / f"{stem}.{ext}"
    suffix = 0
    while path.exists():
        suffix += 1
        path = folder / f"{stem}-{suffix}.{ext}"
    atomic_write_bytes(path, data)
    return path


def _add_warning(result: GenerationResult, warning: str) -> None:
    if warning not in result.warnings:
        result.warnings.append(warning)
