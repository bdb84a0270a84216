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
from dataclasses import dataclass, field
from typing import Any

from sdstudio.config import DataPaths, Settings, SettingsStore
from sdstudio.engine.cancel import CancelToken
from sdstudio.engine.job_context import BatchHook, GenerationModel, ImageUpscaler, JobContext, ProgressEvent
from sdstudio.engine.processing import run_generation
from sdstudio.engine.request import GenerationResult, Img2ImgRequest, Txt2ImgRequest
from sdstudio.engine.saving import ImageSaver
from sdstudio.errors import InvalidRequest, ModelLoadError, NotFound

ModelSource = Callable[[str | None, Settings], GenerationModel]
"""`model_source(checkpoint_name_or_None, job_settings) -> GenerationModel`; None = the settings' checkpoint."""


@dataclass
class GenerationControl:
    """Progress sink and cancel token for one job (the token may be set from any thread)."""

    cancel: CancelToken = field(default_factory=CancelToken)
    on_progress: Callable[[ProgressEvent], None] | None = None
    preview_every: int | None = None  # None: settings.show_progress_every_n_steps when live previews are on

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

    def txt2img(self, request: Txt2ImgRequest, control: GenerationControl | None = None) -> GenerationResult:
        """Generate images from text."""
        if not isinstance(request, Txt2ImgRequest):
            raise InvalidRequest("request", "txt2img needs a Txt2ImgRequest")
        return self._run(request, "txt2img", control)

    def img2img(self, request: Img2ImgRequest, control: GenerationControl | None = None) -> GenerationResult:
        """Generate images from init images (with a mask: inpainting)."""
        if not isinstance(request, Img2ImgRequest):
            raise InvalidRequest("request", "img2img needs an Img2ImgRequest")
        return self._run(request, "img2img", control)

    def generate(
        self, request: Txt2ImgRequest | Img2ImgRequest, control: GenerationControl | None = None
    ) -> GenerationResult:
        """Dispatch on the request type (handy for queues)."""
        if isinstance(request, Img2ImgRequest):
            return self.img2img(request, control)
        return self.txt2img(request, control)

    def _run(
        self, request: Txt2ImgRequest | Img2ImgRequest, kind: str, control: GenerationControl | None
    ) -> GenerationResult:
        control = control or GenerationControl()
        overrides = request.override_settings or {}
        checkpoint = self.checkpoint_for(overrides)
        self.check_checkpoint("refiner_checkpoint", request.refiner_checkpoint)
        if isinstance(request, Txt2ImgRequest) and request.enable_hr:
            self.check_checkpoint("hr_checkpoint_name", request.hr_checkpoint_name)
        with self.device_lock:
            # The job's one view of the settings, taken when it starts on the device.
            settings = self.settings_store.snapshot(overrides)
            model = self.model_source(checkpoint, settings)
            preview_every = control.preview_every
            if preview_every is None:
                preview_every = settings.show_progress_every_n_steps if settings.live_previews_enable else 0
            ctx = JobContext(
                model=model,
                settings=settings,
                saver=ImageSaver(self.paths, settings),
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
            )
            result = run_generation(request, ctx, self.apply_styles)
            if overrides and not request.override_settings_restore_afterwards:
                # A1111: the overrides stay in force after the job (for this run; not saved).
                self.settings_store.overlay(overrides, field="override_settings")
            return result
