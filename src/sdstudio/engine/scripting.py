"""What scripts and extensions see of a job: A1111's `p`, the hook points, and `process_images`.

A1111's scripts receive `p`, the StableDiffusionProcessing object, change its fields and
call `processing.process_images(p)`. sdstudio keeps those names so that porting a script is
mechanical, without A1111's globals: `p` is a typed, mutable view of one request
(`StableDiffusionProcessingTxt2Img` / `...Img2Img`), built from the engine's request and
turned back into a validated request by `to_request()` whenever it is processed, so a bad
value set by a script is an error naming the field. Everything a script needs from the
running studio (settings, the cancel state, saving a grid, other checkpoints' names)
comes through `p.services`, an object the service hands in for this request only.

The engine calls the hooks of `JobHooks` at A1111's points (modules/processing.py,
process_images / process_images_inner):

    setup                once per request, before anything runs (selected script's `run` included)
    before_process       each process_images(p), before the settings and model are chosen
    process              after the prompts and seeds are set up (p.all_prompts, p.all_seeds...)
    before_process_batch before a batch's extra networks (LoRA) are applied (prompts may change)
    process_batch        after them, before the prompt is encoded
    cfg_denoiser/-ed     around each guided UNet call (on_cfg_denoiser / on_cfg_denoised)
    unet_kwargs          each guided UNet call: always-on scripts add UNet keyword arguments (ControlNet residuals)
    postprocess_batch    the decoded batch, as a [0, 1] tensor (B, C, H, W)
    postprocess_image    each image (PostprocessImageArgs: replace `.image`), before it is saved
    before_image_saved / image_saved   around every file written (on_before_image_saved / on_image_saved)
    postprocess          the finished result (A1111's Processed)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from PIL import Image

from sdstudio.config import Settings
from sdstudio.engine.request import GenerationResult, Img2ImgRequest, Txt2ImgRequest
from sdstudio.engine.sampling import CFGDenoisedParams as CFGDenoisedParams  # re-exported for scripts
from sdstudio.engine.sampling import CFGDenoiserParams as CFGDenoiserParams
from sdstudio.engine.sampling import DenoiserHooks
from sdstudio.engine.sampling import UNetCallParams as UNetCallParams
from sdstudio.engine.seeds import fixed_seed
from sdstudio.errors import InvalidRequest

Processed = GenerationResult
"""A1111's name for a job's result (images, infotexts, all_seeds, js()...)."""


class ControlNetProvider(Protocol):
    """The ControlNet models units may name (sd-webui-controlnet's model list): titles and loading."""

    def titles(self) -> list[str]:
        """The models as /controlnet/model_list lists them ("<stem> [<hash>]")."""
        ...

    def load(self, name: str) -> torch.nn.Module:
        """The model a unit names (a title, stem or part of a name); NotFound naming it otherwise."""
        ...

    def title(self, name: str) -> str:
        """The full title of the model `name` finds, as the infotext records it ("<stem> [<hash>]")."""
        ...


class ProcessingServices(Protocol):
    """What the running studio offers a script for one request (A1111 reaches these through `shared`)."""

    @property
    def settings(self) -> Settings:
        """The settings in force for this request (A1111 `shared.opts`), read-only."""
        ...

    @property
    def interrupted(self) -> bool:
        """The user pressed Interrupt (A1111 `state.interrupted`): a script's loop stops."""
        ...

    @property
    def controlnets(self) -> ControlNetProvider | None:
        """The ControlNet models (None: this studio has none wired)."""
        ...

    def process_images(self, p: StableDiffusionProcessing) -> Processed:
        """Run one job from `p` (what `process_images(p)` calls)."""
        ...

    def save_grid(self, p: StableDiffusionProcessing, image: Image.Image, infotext: str | None) -> Path | None:
        """Save a script's grid in the grids folder when the settings ask for grids (grid_save); its path."""
        ...

    def save_image(
        self, p: StableDiffusionProcessing, image: Image.Image, seed: int | None, infotext: str | None
    ) -> Path | None:
        """Save an image a script made in the samples folder, unless samples_save is off or `p` says not to."""
        ...

    def interrogate(self, image: Image.Image, model: str) -> str:
        """A prompt read from `image` by "clip" or "deepdanbooru" (A1111 `shared.interrogator`, `deepbooru`)."""
        ...

    def checkpoint_names(self) -> list[str]:
        """Titles of the checkpoints a script may switch to (`override_settings.sd_model_checkpoint`)."""
        ...

    def vae_names(self) -> list[str]:
        """Names of the VAE files `override_settings.sd_vae` may pick (besides "Automatic" and "None")."""
        ...

    def upscaler_names(self) -> list[str]:
        """Names of the image upscalers (`upscale` takes them)."""
        ...

    def upscale(self, image: Image.Image, name: str, width: int, height: int) -> Image.Image:
        """`image` upscaled to (width, height) with the named upscaler (A1111 `shared.sd_upscalers`)."""
        ...

    def set_job_count(self, count: int) -> None:
        """How many jobs a script will run (A1111 `state.job_count`), for progress."""
        ...


class StableDiffusionProcessing:
    """A1111's `p`: one request's fields under A1111's names, free for scripts to change.

    Construction copies every field of the engine request; `to_request()` validates them
    back. The attributes set while a job runs follow A1111: `all_prompts`,
    `all_negative_prompts`, `all_seeds`, `all_subseeds` after setup; `prompts`,
    `negative_prompts`, `seeds`, `subseeds`, `iteration`, `batch_index` per batch.
    """

    request_type: ClassVar[type[Txt2ImgRequest] | type[Img2ImgRequest]]
    is_img2img: ClassVar[bool] = False

    # The request fields scripts use most (every other request field is an attribute too).
    prompt: str | list[str]
    negative_prompt: str | list[str]
    styles: list[str]
    seed: int | list[int]  # A1111: a script may give one seed per image (prompt matrix); see per_image_seeds
    subseed: int | list[int]
    subseed_strength: float
    seed_resize_from_h: int
    seed_resize_from_w: int
    sampler_name: str
    scheduler: str
    batch_size: int
    n_iter: int
    steps: int
    cfg_scale: float
    width: int
    height: int
    restore_faces: bool
    tiling: bool
    do_not_save_samples: bool
    do_not_save_grid: bool
    denoising_strength: float
    override_settings: dict[str, Any]
    override_settings_restore_afterwards: bool
    outpath_samples: str | None
    outpath_grids: str | None

    def __init__(self, request: Txt2ImgRequest | Img2ImgRequest, services: ProcessingServices | None = None):
        for name in type(request).model_fields:
            value = getattr(request, name)
            setattr(
                self,
                name,
                list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value,
            )
        self.services = services
        self.extra_generation_params: dict[str, Any] = {}
        self.script_args: list[Any] = []
        self.all_prompts: list[str] = []
        self.all_negative_prompts: list[str] = []
        self.all_seeds: list[int] = []
        self.all_subseeds: list[int] = []
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.iteration = 0
        self.batch_index = 0
        self.sd_model: Any = None  # the loaded model while a job runs (GenerationModel)
        self.comments: dict[str, str] = {}
        self.warnings: list[str] = []  # what the scripts want the user told (joins the result's warnings)

    @classmethod
    def for_request(
        cls, request: Txt2ImgRequest | Img2ImgRequest, services: ProcessingServices | None = None
    ) -> StableDiffusionProcessing:
        """The right `p` class for a request."""
        if isinstance(request, Img2ImgRequest):
            return StableDiffusionProcessingImg2Img(request, services)
        return StableDiffusionProcessingTxt2Img(request, services)

    def request_fields(self) -> dict[str, Any]:
        """The request fields as they stand now (a per-image seed list gives the request its first seed)."""
        fields = {name: getattr(self, name) for name in self.request_type.model_fields}
        for name in ("seed", "subseed"):
            if isinstance(fields[name], list):
                fields[name] = int(fields[name][0]) if fields[name] else -1
        return fields

    def per_image_seeds(self, seeds: list[int], subseeds: list[int]) -> tuple[list[int], list[int]]:
        """`all_seeds`/`all_subseeds`: p.seed/p.subseed where a script set them to lists (A1111), else the planned."""
        return (
            [int(s) for s in self.seed] if isinstance(self.seed, list) else list(seeds),
            [int(s) for s in self.subseed] if isinstance(self.subseed, list) else list(subseeds),
        )

    def to_request(self) -> Txt2ImgRequest | Img2ImgRequest:
        """The fields validated into an engine request; a bad value raises InvalidRequest naming the field."""
        from pydantic import ValidationError

        from sdstudio.validation import invalid_request

        try:
            return self.request_type(**self.request_fields())
        except ValidationError as exc:
            raise invalid_request(exc) from None

    def copy(self) -> StableDiffusionProcessing:
        """An independent `p` with the same request fields (what X/Y/Z and loopback start each run from)."""
        clone = type(self)(self.to_request(), self.services)
        clone.seed, clone.subseed = _copied(self.seed), _copied(self.subseed)
        clone.extra_generation_params = dict(self.extra_generation_params)
        clone.script_args = list(self.script_args)
        clone.warnings = self.warnings  # one list per request: what any of its jobs' scripts want told
        return clone

    @property
    def settings(self) -> Settings:
        """The settings this request runs with (A1111 `shared.opts`)."""
        return self._services().settings

    def _services(self) -> ProcessingServices:
        if self.services is None:
            raise InvalidRequest("script", "this p is not attached to a running studio")
        return self.services


def _copied(value: int | list[int]) -> int | list[int]:
    return list(value) if isinstance(value, list) else value


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    """A1111's txt2img `p`."""

    request_type = Txt2ImgRequest
    enable_hr: bool
    hr_scale: float
    hr_upscaler: str
    hr_second_pass_steps: int
    hr_resize_x: int
    hr_resize_y: int


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """A1111's img2img `p`."""

    request_type = Img2ImgRequest
    is_img2img = True
    init_images: list[Image.Image]
    mask: Image.Image | None
    resize_mode: int
    inpainting_fill: int
    mask_blur: int | None  # given: both directions' blur (else mask_blur_x / mask_blur_y)
    mask_blur_x: int
    mask_blur_y: int
    inpaint_full_res: bool
    inpaint_full_res_padding: int
    inpainting_mask_invert: int


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run the job `p` describes, with the scripts' hooks, and return its result (A1111's function)."""
    return p._services().process_images(p)


def join_processed(results: list[Processed]) -> Processed:
    """One result from several jobs' (a script that ran many): their images in order, without their grids.

    The info is the first job's, with A1111's per-image lists (`all_prompts`, `all_seeds`,
    `infotexts`...) those of every image.
    """
    joined = GenerationResult()
    for result in results:
        joined.images += result.images[result.index_of_first_image :]
        joined.seeds += result.seeds
        joined.subseeds += result.subseeds
        joined.prompts += result.prompts
        joined.negative_prompts += result.negative_prompts
        joined.infotexts += result.infotexts
        joined.saved_paths += result.saved_paths
        joined.warnings += [warning for warning in result.warnings if warning not in joined.warnings]
        joined.interrupted = joined.interrupted or result.interrupted
    joined.info = dict(results[0].info) if results else {}
    joined.info.update(
        all_prompts=joined.prompts,
        all_negative_prompts=joined.negative_prompts,
        all_seeds=joined.seeds,
        all_subseeds=joined.subseeds,
        infotexts=list(joined.infotexts),
        index_of_first_image=0,
        interrupted=joined.interrupted,
        warnings=joined.warnings,
    )
    return joined


def insert_grid(result: Processed, grid: Image.Image, infotext: str | None, path: Path | None = None) -> None:
    """Put a script's grid first in `result` (A1111: `images.insert(0, grid)`, `index_of_first_image = 1`)."""
    if result.index_of_first_image:  # replace the job's own grid
        del result.images[: result.index_of_first_image]
    result.images.insert(0, grid)
    result.index_of_first_image = 1
    result.grid_infotext = infotext
    result.grid_path = path
    result.info.update(index_of_first_image=1, infotexts=[infotext or "", *result.infotexts])


def seed_of(value: int | list[int]) -> int:
    """The first image's seed of a `p.seed` that may be a per-image list."""
    return value if isinstance(value, int) else value[0]


def fix_seed(p: StableDiffusionProcessing) -> None:
    """Turn a random seed and variation seed (-1) into concrete ones, so that every job of a script shares them."""
    p.seed = [fixed_seed(s) for s in p.seed] if isinstance(p.seed, list) else fixed_seed(p.seed)
    p.subseed = [fixed_seed(s) for s in p.subseed] if isinstance(p.subseed, list) else fixed_seed(p.subseed)


def script_result(
    jobs: list[Processed],
    images: list[Image.Image],
    infotexts: list[str],
    seeds: list[int],
    grid: Image.Image | None = None,
    saved_paths: list[Path] | None = None,
) -> Processed:
    """A selected script's result from the jobs it ran (A1111 `Processed(p, images, seed, info)`).

    `images` come with one infotext and seed each; `grid`, when given, is put first (as
    `return_grid` does). Prompts and the rest of `info` are those of the first job; the
    jobs' warnings and interruption carry over.
    """
    first = jobs[0] if jobs else Processed()
    count = len(images)
    warnings = list(dict.fromkeys(w for job in jobs for w in job.warnings))
    result = Processed(
        images=([grid] if grid is not None else []) + list(images),
        seeds=list(seeds),
        subseeds=[first.subseeds[0] if first.subseeds else -1] * count,
        prompts=[first.prompts[0] if first.prompts else ""] * count,
        negative_prompts=[first.negative_prompts[0] if first.negative_prompts else ""] * count,
        infotexts=list(infotexts),
        saved_paths=list(saved_paths) if saved_paths is not None else [p for job in jobs for p in job.saved_paths],
        grid_infotext=(infotexts[0] if infotexts else None) if grid is not None else None,
        index_of_first_image=1 if grid is not None else 0,
        warnings=warnings,
        interrupted=any(job.interrupted for job in jobs),
    )
    result.info = {
        **first.info,
        "all_prompts": result.prompts,
        "all_negative_prompts": result.negative_prompts,
        "seed": seeds[0] if seeds else first.info.get("seed", -1),
        "all_seeds": result.seeds,
        "all_subseeds": result.subseeds,
        "index_of_first_image": result.index_of_first_image,
        "infotexts": ([result.grid_infotext or ""] if grid is not None else []) + result.infotexts,
        "interrupted": result.interrupted,
        "warnings": warnings,
    }
    return result


@dataclass
class PostprocessImageArgs:
    """A1111's argument to `postprocess_image`: replace `image` to change what is saved."""

    image: Image.Image


@dataclass
class ImageSaveParams:
    """A1111's argument to on_before_image_saved / on_image_saved.

    Before saving, a callback may replace `image` or change `pnginfo["parameters"]` (the
    infotext); after saving, `filename` is the file written.
    """

    image: Image.Image
    p: StableDiffusionProcessing | None
    filename: str
    pnginfo: dict[str, Any] = field(default_factory=dict)


class JobHooks(DenoiserHooks, Protocol):
    """The scripts' and callbacks' hook points in a job, in A1111's order (see the module docstring)."""

    def before_process(self, p: StableDiffusionProcessing) -> None: ...

    def process(self, p: StableDiffusionProcessing) -> None: ...

    def before_process_batch(
        self, p: StableDiffusionProcessing, batch_number: int, prompts: list[str], seeds: list[int], subseeds: list[int]
    ) -> None: ...

    def process_batch(
        self, p: StableDiffusionProcessing, batch_number: int, prompts: list[str], seeds: list[int], subseeds: list[int]
    ) -> None: ...

    def postprocess_batch(self, p: StableDiffusionProcessing, images: torch.Tensor, batch_number: int) -> None: ...

    def postprocess_image(self, p: StableDiffusionProcessing, pp: PostprocessImageArgs) -> None: ...

    def before_image_saved(self, params: ImageSaveParams) -> None: ...

    def image_saved(self, params: ImageSaveParams) -> None: ...

    def postprocess(self, p: StableDiffusionProcessing, processed: Processed) -> None: ...


class NoHooks:
    """JobHooks that do nothing (a job without scripts)."""

    def before_process(self, p: StableDiffusionProcessing) -> None:
        pass

    def process(self, p: StableDiffusionProcessing) -> None:
        pass

    def before_process_batch(
        self, p: StableDiffusionProcessing, batch_number: int, prompts: list[str], seeds: list[int], subseeds: list[int]
    ) -> None:
        pass

    def process_batch(
        self, p: StableDiffusionProcessing, batch_number: int, prompts: list[str], seeds: list[int], subseeds: list[int]
    ) -> None:
        pass

    def postprocess_batch(self, p: StableDiffusionProcessing, images: torch.Tensor, batch_number: int) -> None:
        pass

    def postprocess_image(self, p: StableDiffusionProcessing, pp: PostprocessImageArgs) -> None:
        pass

    def before_image_saved(self, params: ImageSaveParams) -> None:
        pass

    def image_saved(self, params: ImageSaveParams) -> None:
        pass

    def postprocess(self, p: StableDiffusionProcessing, processed: Processed) -> None:
        pass

    def cfg_denoiser(self, params: CFGDenoiserParams) -> None:
        pass

    def cfg_denoised(self, params: CFGDenoisedParams) -> None:
        pass

    def unet_kwargs(self, params: UNetCallParams) -> dict[str, Any]:
        return {}


SaveCallback = Callable[[ImageSaveParams], None]


@dataclass
class ScriptSelection:
    """The scripts a request asks for: A1111's `script_name` + `script_args` and `alwayson_scripts`."""

    script_name: str | None = None
    script_args: list[Any] = field(default_factory=list)
    alwayson_scripts: dict[str, Any] = field(default_factory=dict)  # name -> {"args": [...]} (or the args)


class JobScripts(JobHooks, Protocol):
    """The scripts of one request: their hooks, plus `setup` and the selected script's `run`."""

    @property
    def active(self) -> bool:
        """Whether any script or callback takes part (False: the job runs without a `p`)."""
        ...

    def setup(self, p: StableDiffusionProcessing) -> None:
        """Every taking-part script's `setup(p, *args)`, once per request."""
        ...

    def run(self, p: StableDiffusionProcessing) -> Processed | None:
        """The selected script's `run(p, *args)`; None when none is selected (or it returned None)."""
        ...


ScriptsForJob = Callable[[str, ScriptSelection], JobScripts]
"""`scripts_for_job(kind, selection)`: the scripts a txt2img/img2img request runs with."""
