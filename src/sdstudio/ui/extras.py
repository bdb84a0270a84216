"""The Extras tab: upscale (two upscalers blended) and face restoration, through the job queue."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdstudio.errors import SdStudioError
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.image_inputs import checked_image
from sdstudio.ui.jobs import client_queue, status_html

log = logging.getLogger(__name__)


@dataclass
class ExtrasTab:
    """What other tabs need: the input image (for "Send to extras")."""

    image: Any
    run: Any
    gallery: Any
    info: Any


def extras_options(values: dict[str, Any]) -> dict[str, Any]:
    """The A1111 ExtrasBaseRequest fields from the tab's values."""
    options = {k: v for k, v in values.items() if v is not None}
    options["resize_mode"] = int(options.get("resize_mode") or 0)
    for name in ("upscaling_resize_w", "upscaling_resize_h"):
        if name in options:
            options[name] = int(options[name])
    return options


def build_extras_tab(backend: UiBackend, queue) -> ExtrasTab:
    """Build the tab (inside an open gr.Tab); without the postprocess module it says what is missing."""
    service_available = backend.postprocess_service() is not None
    if not service_available:
        gr.Markdown(
            "Extras needs sdstudio's postprocess module (upscalers, face restoration), which is not "
            "available in this build.",
            elem_id="extras_missing",
        )
    upscalers = backend.upscaler_names() or ["None"]
    faces = backend.face_restorer_names()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=380):
            image = checked_image(
                check=backend.check_image,
                field="image",
                label="Source",
                type="pil",
                sources=["upload", "clipboard"],
                height=360,
                elem_id="extras_image",
            )
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate", interactive=service_available)
            fields: dict[str, Any] = {}
            fields["resize_mode"] = gr.Radio(
                ["Scale by", "Scale to"], value="Scale by", type="index", label="Resize", elem_id="extras_resize_mode"
            )
            fields["upscaling_resize"] = gr.Slider(
                1.0, 8.0, value=2.0, step=0.05, label="Resize", elem_id="extras_upscaling_resize"
            )
            with gr.Row():
                fields["upscaling_resize_w"] = gr.Number(
                    label="Width", value=512, precision=0, elem_id="extras_upscaling_resize_w"
                )
                fields["upscaling_resize_h"] = gr.Number(
                    label="Height", value=512, precision=0, elem_id="extras_upscaling_resize_h"
                )
                fields["upscaling_crop"] = gr.Checkbox(label="Crop to fit", value=True, elem_id="extras_upscaling_crop")
            fields["upscaler_1"] = gr.Dropdown(
                upscalers,
                value="Lanczos" if "Lanczos" in upscalers else upscalers[0],
                label="Upscaler 1",
                elem_id="extras_upscaler_1",
            )
            with gr.Row():
                fields["upscaler_2"] = gr.Dropdown(
                    upscalers, value="None", label="Upscaler 2", elem_id="extras_upscaler_2"
                )
                fields["extras_upscaler_2_visibility"] = gr.Slider(
                    0.0,
                    1.0,
                    value=0.0,
                    step=0.001,
                    label="Upscaler 2 visibility",
                    elem_id="extras_upscaler_2_visibility",
                )
            with gr.Accordion("Face restoration", open=False, elem_id="extras_face_restoration"):
                if not faces:
                    gr.Markdown("No GFPGAN or CodeFormer model found: put one in models/GFPGAN or models/Codeformer.")
                fields["gfpgan_visibility"] = gr.Slider(
                    0.0, 1.0, value=0.0, step=0.001, label="GFPGAN visibility", elem_id="extras_gfpgan_visibility"
                )
                fields["codeformer_visibility"] = gr.Slider(
                    0.0,
                    1.0,
                    value=0.0,
                    step=0.001,
                    label="CodeFormer visibility",
                    elem_id="extras_codeformer_visibility",
                )
                fields["codeformer_weight"] = gr.Slider(
                    0.0,
                    1.0,
                    value=0.0,
                    step=0.001,
                    label="CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                    elem_id="extras_codeformer_weight",
                )
        with gr.Column(scale=1, min_width=380):
            gallery = gr.Gallery(
                label="Result",
                show_label=False,
                elem_id="extras_gallery",
                format="png",
                height=480,
                type="filepath",
                interactive=False,
            )
            info = gr.HTML("", elem_id="extras_info")
    names = list(fields)

    def process(page: gr.Request, source, *values):
        if source is None:
            return [], status_html("Drop an image into the Source box first", "error")
        service = backend.postprocess_service()
        if service is None:
            return [], status_html("Extras is not available in this build", "error")
        try:
            from sdstudio.postprocess.extras import ExtrasSingleImageRequest

            # A bad value is an InvalidRequest naming the field (shown below).
            request = ExtrasSingleImageRequest(image=source.convert("RGB"), **extras_options(dict(zip(names, values))))
            job = client_queue(queue, page, backend.settings).submit(
                "extras", lambda job: service.run_single(request, save=True)
            )
            result = job.future.result()
        except SdStudioError as exc:
            return [], status_html(str(exc), "error")
        except Exception as exc:  # a bug: keep the UI alive and say what happened
            log.exception("extras failed")
            return [], status_html(f"Extras failed: {type(exc).__name__}: {exc}", "error")
        notes = "".join(status_html(n, "warning") for n in result.notes)
        return [item.image for item in result.images], result.html_info + notes

    run.click(
        process,
        inputs=[image, *fields.values()],
        outputs=[gallery, info],
        concurrency_limit=None,
        api_visibility="private",
    )
    return ExtrasTab(image, run, gallery, info)
