"""GenerationService: the one object every front end asks for images.

It owns the loaded model (through an injected `model_source`), serialises all work on
the device with one lock, and runs txt2img and img2img jobs. Front ends pass a validated
request and, optionally, a `GenerationControl` that receives progress events and carries
the job's cancel token; the job queue hands its Job's token straight in:

    control = GenerationControl(cancel=job.cancel, on_progress=lambda e: ...)
    result = service.txt2img(request, control)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.engine.cancel import CancelToken
from sdstudio.engine.job_context import BatchHook, GenerationModel, ImageUpscaler, JobContext, ProgressEvent
from sdstudio.engine.processing import run_generation
from sdstudio.engine.request import GenerationResult, Img2ImgRequest, Txt2ImgRequest, check_limits
from sdstudio.engine.saving import ImageSaver
from sdstudio.engine.scripting import (
    ControlNetProvider,
    ImageSaveParams,
    JobHooks,
    JobScripts,
    NoHooks,
    Processed,
    ScriptSelection,
    ScriptsForJob,
    StableDiffusionProcessing,
)
from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound

ModelSource = Callable[[str | None, Settings], GenerationModel]
"""`model_source(checkpoint_name_or_None, job_settings) -> GenerationModel`; None = the settings' checkpoint."""


@dataclass
class GenerationControl:
    """Progress sink and cancel token for one job (the token may be set from any thread)."""

    cancel: CancelToken = field(default_factory=CancelToken)
    on_progress: Callable[[ProgressEvent], None] | None = None
    preview_every: int | None = None  # None: settings.show_progress_every_n_steps when live previews are on
    on_file: Callable[[Path], None] | None = None
    """Told the path of every image and grid the job saves, just before it is written (the task store keeps them)."""
    task_id: str | None = None
    """The queued job's id, where the work runs elsewhere and reports by it (server.cluster)."""

    def interrupt(self) -> None:
        """Stop after the current step; finished images (and the current partial one) are kept."""
        self.cancel.interrupt()

    def skip(self) -> None:
        """Abandon the current batch and go on with the next one."""
        self.cancel.skip()


class GenerationService:
    """Runs generation jobs one at a time on the device."""

    def __init__(
        self,
        settings: SettingsStore,
        paths: DataPaths,
        model_source: ModelSource,
        apply_styles: Callable[[str, str, list[str]], tuple[str, str]] | None = None,
        upscale_image: ImageUpscaler | None = None,
        upscaler_names: Callable[[], list[str]] | None = None,
        restore_faces: Callable[[Any, Settings], Any] | None = None,
        batch_hooks: list[BatchHook] | None = None,
        watermark: Callable[[Any], Any] | None = None,
        version: str = "",
        locate_checkpoint: Callable[[str], Any] | None = None,
        scripts_for_job: ScriptsForJob | None = None,
        checkpoint_titles: Callable[[], list[str]] | None = None,
        vae_names: Callable[[], list[str]] | None = None,
        interrogate: Callable[[Image.Image, str], str] | None = None,
        controlnets: ControlNetProvider | None = None,
    ):
        self.settings_store = settings
        self.paths = paths
        self.model_source = model_source
        self.apply_styles = apply_styles
        self.upscale_image = upscale_image
        self.upscaler_names = upscaler_names  # the usable names upscale_image takes (None: not checked early)
        self.restore_faces = restore_faces
        self.watermark = watermark
        self.batch_hooks = batch_hooks if batch_hooks is not None else []  # extensions append (LoRA...)
        self.version = version
        self.locate_checkpoint = locate_checkpoint  # name -> file, NotFound when unknown (checks refiner_checkpoint)
        self.scripts_for_job = scripts_for_job  # the scripts and extensions (None: jobs run without any)
        self.checkpoint_titles = checkpoint_titles  # what scripts may switch to (X/Y/Z "Checkpoint name")
        self.vae_names = vae_names  # the VAE files scripts may pick (X/Y/Z "VAE")
        self.interrogate = interrogate  # image, "clip"/"deepdanbooru" -> prompt (Loopback's interrogation)
        self.controlnets = controlnets  # the ControlNet models the ControlNet script's units name
        self.device_lock = threading.Lock()
        self.checkpoint: str | None = None  # chosen with select_model; None = settings' sd_model_checkpoint

    def select_model(self, ckpt: str | None = None, model: str | None = None) -> None:
        """Use this checkpoint (a file path or a registry name/hash) for the following jobs."""
        self.checkpoint = str(ckpt) if ckpt else model

    def checkpoint_for(self, override_settings: dict[str, Any] | None) -> str | None:
        """The checkpoint a job with these overrides runs on (None: the settings' `sd_model_checkpoint`)."""
        return (override_settings or {}).get("sd_model_checkpoint") or self.checkpoint

    def check_checkpoint(self, field: str, name: str | None) -> None:
        """Refuse an unknown refiner_checkpoint/hr_checkpoint_name before the job starts (A1111 does too)."""
        if name is None or self.locate_checkpoint is None:
            return
        try:
            self.locate_checkpoint(name)
        except (NotFound, ModelLoadError) as exc:  # unknown, or a file that cannot be used
            raise InvalidRequest(field, str(exc)) from None

    def txt2img(
        self,
        request: Txt2ImgRequest,
        control: GenerationControl | None = None,
        scripts: ScriptSelection | None = None,
    ) -> GenerationResult:
        """Generate images from text (with the scripts `scripts` names, and the always-on ones)."""
        if not isinstance(request, Txt2ImgRequest):
            raise InvalidRequest("request", "txt2img needs a Txt2ImgRequest")
        return self._run(request, "txt2img", control, scripts)

    def img2img(
        self,
        request: Img2ImgRequest,
        control: GenerationControl | None = None,
        scripts: ScriptSelection | None = None,
    ) -> GenerationResult:
        """Generate images from init images (with a mask: inpainting)."""
        if not isinstance(request, Img2ImgRequest):
            raise InvalidRequest("request", "img2img needs an Img2ImgRequest")
        return self._run(request, "img2img", control, scripts)

    def generate(
        self,
        request: Txt2ImgRequest | Img2ImgRequest,
        control: GenerationControl | None = None,
        scripts: ScriptSelection | None = None,
    ) -> GenerationResult:
        """Dispatch on the request type (handy for queues)."""
        if isinstance(request, Img2ImgRequest):
            return self.img2img(request, control, scripts)
        return self.txt2img(request, control, scripts)

    def _run(
        self,
        request: Txt2ImgRequest | Img2ImgRequest,
        kind: str,
        control: GenerationControl | None,
        selection: ScriptSelection | None,
    ) -> GenerationResult:
        control = control or GenerationControl()
        self.check_request_checkpoints(request)
        job_scripts = self.scripts_for_job(kind, selection or ScriptSelection()) if self.scripts_for_job else None
        with self.device_lock:
            if job_scripts is None or not job_scripts.active:
                return self._process(request, kind, control, None, NoHooks())
            # A1111's script flow: setup, then the selected script's run (which calls
            # process_images(p) as often as it likes), else one process_images(p).
            services = ScriptServices(
                self, kind, control, job_scripts, self.settings_store.snapshot(request.override_settings or {})
            )
            p = StableDiffusionProcessing.for_request(request, services)
            job_scripts.setup(p)
            result = job_scripts.run(p)
            if result is None:
                return services.process_images(p)
            if result.grid_path is None and services.saved_grids:  # a script's own grid (X/Y/Z...)
                result.grid_path = services.saved_grids[0]
            return result

    def check_request_checkpoints(self, request: Txt2ImgRequest | Img2ImgRequest) -> None:
        """Refuse an unknown refiner or hires checkpoint before the job waits for the device."""
        self.check_checkpoint("refiner_checkpoint", request.refiner_checkpoint)
        if isinstance(request, Txt2ImgRequest) and request.enable_hr:
            self.check_checkpoint("hr_checkpoint_name", request.hr_checkpoint_name)

    def _process(
        self,
        request: Txt2ImgRequest | Img2ImgRequest,
        kind: str,
        control: GenerationControl,
        p: StableDiffusionProcessing | None,
        hooks: JobHooks,
    ) -> GenerationResult:
        """One job on the device (the caller holds the device lock): settings, model, run."""
        overrides = request.override_settings or {}
        checkpoint = self.checkpoint_for(overrides)
        # The job's one view of the settings, taken when it starts on the device.
        settings = self.settings_store.snapshot(overrides)
        model = self.model_source(checkpoint, settings)
        preview_every = control.preview_every
        if preview_every is None:
            preview_every = settings.show_progress_every_n_steps if settings.live_previews_enable else 0
        ctx = JobContext(
            model=model,
            settings=settings,
            saver=ImageSaver(self.paths, settings, control.on_file),
            kind=kind,
            cancel=control.cancel,
            on_progress=control.on_progress,
            preview_every=max(0, int(preview_every)),
            upscale_image=self.upscale_image,
            upscaler_names=self.upscaler_names,
            restore_faces=self.restore_faces,
            batch_hooks=list(self.batch_hooks),
            load_checkpoint=lambda name: self.model_source(name, settings),
            watermark=self.watermark,
            version=self.version,
            p=p,
            hooks=hooks,
        )
        result = run_generation(request, ctx, self.apply_styles)
        if overrides and not request.override_settings_restore_afterwards:
            # A1111: the overrides stay in force after the job (for this run; not saved).
            self.settings_store.overlay(overrides, field="override_settings")
        return result


class ScriptServices:
    """What the scripts of one request get from the service (`p.services`): processing, saving, names.

    `process_images(p)` runs `p` as one job under the device lock the request already
    holds; progress is reported across all of a script's jobs (A1111 `state.job_count`).
    """

    def __init__(
        self,
        service: GenerationService,
        kind: str,
        control: GenerationControl,
        scripts: JobScripts,
        settings: Settings,
    ) -> None:
        self.service = service
        self.kind = kind
        self.control = control
        self.scripts = scripts
        self._settings = settings
        self.job_count = 0  # 0: as many as the jobs run so far
        self.jobs_done = 0
        self.saved_grids: list[Path] = []  # what save_grid wrote, in order

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def interrupted(self) -> bool:
        return self.control.cancel.interrupted

    @property
    def controlnets(self) -> ControlNetProvider | None:
        return self.service.controlnets

    def set_job_count(self, count: int) -> None:
        self.job_count = max(0, int(count))

    def process_images(self, p: StableDiffusionProcessing) -> Processed:
        """A1111's process_images(p): before_process, then one job with the scripts' hooks."""
        self.scripts.before_process(p)
        request = p.to_request()
        check_limits(request, self.settings_store_snapshot(request))
        offset = self.jobs_done
        outer = self.control.on_progress

        def on_progress(event: ProgressEvent) -> None:
            if outer is not None:
                total = max(self.job_count, offset + event.job_count)
                outer(replace(event, job_no=offset + event.job_no, job_count=total))

        control = replace(self.control, on_progress=on_progress)
        try:
            return self.service._process(request, self.kind, control, p, self.scripts)
        finally:
            self.jobs_done += request.n_iter

    def settings_store_snapshot(self, request: Txt2ImgRequest | Img2ImgRequest) -> Settings:
        return self.service.settings_store.snapshot(request.override_settings or {})

    def save_grid(self, p: StableDiffusionProcessing, image: Image.Image, infotext: str | None) -> Path | None:
        settings = self.settings_store_snapshot(p.to_request())
        if not settings.grid_save or p.do_not_save_grid:
            return None
        return self._save(p, image, infotext, settings, grid=True, seed=None)

    def save_image(
        self, p: StableDiffusionProcessing, image: Image.Image, seed: int | None, infotext: str | None
    ) -> Path | None:
        settings = self.settings_store_snapshot(p.to_request())
        if not settings.samples_save or p.do_not_save_samples:
            return None
        return self._save(p, image, infotext, settings, grid=False, seed=seed)

    def _save(
        self,
        p: StableDiffusionProcessing,
        image: Image.Image,
        infotext: str | None,
        settings: Settings,
        grid: bool,
        seed: int | None,
    ) -> Path:
        """Write a script's image or grid, the on_before_image_saved / on_image_saved callbacks around it."""
        saver = ImageSaver(self.service.paths, settings, self.control.on_file)
        folder = saver.output_folder(self.kind, grid=grid, override=p.outpath_grids if grid else p.outpath_samples)
        params = ImageSaveParams(image, p, "", {"parameters": infotext} if infotext is not None else {})
        self.scripts.before_image_saved(params)
        text = params.pnginfo.get("parameters")
        if grid:
            path = saver.save_grid(params.image, folder, text)
            self.saved_grids.append(path)
        else:
            prompt = p.prompt if isinstance(p.prompt, str) else (p.prompt[0] if p.prompt else "")
            path = saver.save_image(params.image, folder, seed, prompt, text)
        params.filename = str(path)
        self.scripts.image_saved(params)
        return path

    def interrogate(self, image: Image.Image, model: str) -> str:
        if self.service.interrogate is None:
            raise InvalidRequest("script_args", "interrogation is not available in this studio")
        return self.service.interrogate(image, model)

    def checkpoint_names(self) -> list[str]:
        return self.service.checkpoint_titles() if self.service.checkpoint_titles else []

    def vae_names(self) -> list[str]:
        return self.service.vae_names() if self.service.vae_names else []

    def upscaler_names(self) -> list[str]:
        return self.service.upscaler_names() if self.service.upscaler_names else []

    def upscale(self, image: Image.Image, name: str, width: int, height: int) -> Image.Image:
        if name in ("None", "Lanczos", "Nearest") or self.service.upscale_image is None:
            method = Image.Resampling.NEAREST if name == "Nearest" else Image.Resampling.LANCZOS
            return image.resize((width, height), method)
        return self.service.upscale_image(image, name, width, height)
