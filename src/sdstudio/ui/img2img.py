"""The img2img tab: img2img, sketch, inpaint (paint the mask), inpaint sketch, inpaint upload, batch (folders)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdstudio.errors import InvalidRequest
from sdstudio.ui.backend import UiBackend
from sdstudio.ui.generation import (
    GenerationTab,
    build_output_panel,
    build_prompt_row,
    build_refiner_fields,
    build_sampling_fields,
    build_scripts,
    clean_field_values,
    saving_fields,
    wire_generation,
    wire_seed_buttons,
)
from sdstudio.ui.image_inputs import checked_image, checked_image_editor
from sdstudio.ui.sketch import (
    SKETCH_MODES,
    build_inpaint_sketch_tab,
    build_sketch_tab,
    editor_layers,
    painted_mask,
    sketch_images,
)

KIND = "img2img"
MODES = ("img2img", "sketch", "inpaint", "inpaint_sketch", "inpaint_upload", "batch")
RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
MASKED_CONTENT = ["fill", "original", "latent noise", "latent nothing"]
INPAINT_AREAS = ["Whole picture", "Only masked"]


def mask_from_editor(value: dict[str, Any] | None):
    """(image, mask) from the inpaint editor: the background, and white where any layer was painted."""
    image, strokes = editor_layers(value, "inpaint")
    return image.convert("RGB"), painted_mask(strokes)


def make_img2img_request(
    backend: UiBackend,
    values: dict[str, Any],
    mode: str,
    init_image,
    editor,
    upload_image,
    upload_mask,
    sketch=None,
    inpaint_sketch=None,
    mask_transparency=0,
):
    """An Img2ImgRequest from the tab's values and the images of the active mode."""
    from sdstudio.engine.request import Img2ImgRequest, check_limits

    fields = clean_field_values(values)
    fields["inpaint_full_res"] = bool(fields.get("inpaint_full_res"))
    if mode in SKETCH_MODES:
        image, mask = sketch_images(mode, sketch, inpaint_sketch, fields.get("mask_blur", 0), mask_transparency)
    elif mode == "inpaint":
        image, mask = mask_from_editor(editor)
    elif mode == "inpaint_upload":
        if upload_image is None:
            raise InvalidRequest("init_images", "drop an image into the inpaint upload box")
        if upload_mask is None:
            raise InvalidRequest("mask", "drop a mask image (white = repaint) into the mask box")
        image, mask = upload_image, upload_mask.convert("L")
    else:
        if init_image is None:
            raise InvalidRequest("init_images", "drop an image into the img2img box first")
        image, mask = init_image, None
    if mask is None:  # img2img and Sketch: no inpainting fields
        for name in (
            "mask_blur",
            "inpainting_fill",
            "inpaint_full_res",
            "inpaint_full_res_padding",
            "inpainting_mask_invert",
        ):
            fields.pop(name, None)
    request = Img2ImgRequest(**fields, init_images=[image.convert("RGB")], mask=mask, **saving_fields(backend))
    check_limits(request, backend.settings)  # the API's limits hold for the web UI too
    return request


def make_img2img_batch(
    backend: UiBackend,
    values: dict[str, Any],
    input_dir: str | None,
    output_dir: str | None,
    mask_dir: str | None,
    use_png_info: bool = False,
    png_info_props: list[str] | None = None,
):
    """An Img2ImgBatch from the tab's values and the Batch tab's folders (on the server's disk, as A1111).

    sdstudio's UI is local: any readable folder is accepted, a missing one is refused by name.
    """
    from sdstudio.engine.batch_directory import Img2ImgBatch

    fields = clean_field_values(values)
    fields["inpaint_full_res"] = bool(fields.get("inpaint_full_res"))
    props = tuple(png_info_props or ()) if use_png_info else ()
    return Img2ImgBatch.create({**fields, **saving_fields(backend)}, input_dir or "", output_dir, mask_dir, props)


def run_img2img_job(backend: UiBackend, request, control, scripts=None):
    """Run what the tab built with its scripts: one request, or a folder batch (the same engine, file by file)."""
    from sdstudio.engine.batch_directory import Img2ImgBatch

    if isinstance(request, Img2ImgBatch):
        return request.run(backend.engine, control, scripts)
    return backend.engine.img2img(request, control, scripts)


def _build_batch_inputs() -> dict[str, Any]:
    """The Batch tab's folder boxes and A1111's "PNG info" options."""
    from sdstudio.engine.batch_directory import PNG_INFO_PROPS

    gr.Markdown(
        "Process every image in a folder on the machine where sdstudio runs. "
        "Leave the output folder empty to save images normally in the img2img output folder.",
        elem_id="img2img_batch_help",
    )
    boxes: dict[str, Any] = {}
    boxes["input_dir"] = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
    boxes["output_dir"] = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
    boxes["mask_dir"] = gr.Textbox(
        label="Inpaint batch mask directory (required for inpaint batch processing only)",
        elem_id="img2img_batch_inpaint_mask_dir",
    )
    with gr.Accordion("PNG info", open=False, elem_id="img2img_batch_png_info"):
        boxes["use_png_info"] = gr.Checkbox(
            label="Append png info to prompts", value=False, elem_id="img2img_batch_use_png_info"
        )
        boxes["png_info_props"] = gr.CheckboxGroup(
            list(PNG_INFO_PROPS),
            value=list(PNG_INFO_PROPS),
            label="Parameters to take from png info",
            info="Prompts from png info are appended to the prompts set above.",
            elem_id="img2img_batch_png_info_props",
        )
    return boxes


def build_img2img_tab(
    backend: UiBackend, queue, checkpoint: gr.Dropdown, samplers: list[str], schedules: list[str]
) -> GenerationTab:
    """Build the tab's components (inside an open gr.Tab) and wire its events."""
    row = build_prompt_row(KIND, backend)
    extra: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=380, elem_id=f"{KIND}_settings"):
            mode = gr.State("img2img")
            with gr.Tabs(elem_id="img2img_mode_tabs") as mode_tabs:
                with gr.Tab("img2img", id="img2img", elem_id="img2img_img2img_tab") as tab_img2img:
                    extra["init_image"] = checked_image(
                        check=backend.check_image,
                        field="init_images",
                        label="Image for img2img",
                        type="pil",
                        image_mode="RGBA",
                        sources=["upload", "clipboard"],
                        height=300,
                        elem_id="img2img_image",
                    )
                tab_sketch = build_sketch_tab(extra, backend.check_image)
                with gr.Tab(
                    "Inpaint", id="inpaint", elem_id="img2img_inpaint_tab", render_children=True
                ) as tab_inpaint:
                    extra["inpaint_editor"] = checked_image_editor(
                        check=backend.check_image,
                        field="init_images",
                        label="Image for inpainting: paint the area to change",
                        type="pil",
                        image_mode="RGBA",
                        sources=["upload", "clipboard"],
                        height=300,
                        elem_id="img2img_inpaint_editor",
                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                        layers=False,
                        transforms=(),
                    )
                tab_inpaint_sketch = build_inpaint_sketch_tab(extra, backend.check_image)
                with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id="img2img_inpaint_upload_tab") as tab_upload:
                    with gr.Row():
                        extra["upload_image"] = checked_image(
                            check=backend.check_image,
                            field="init_images",
                            label="Image",
                            type="pil",
                            image_mode="RGB",
                            sources=["upload", "clipboard"],
                            height=300,
                            elem_id="img2img_upload_image",
                        )
                        extra["upload_mask"] = checked_image(
                            check=backend.check_image,
                            field="mask",
                            label="Mask (white = repaint)",
                            type="pil",
                            image_mode="L",
                            sources=["upload", "clipboard"],
                            height=300,
                            elem_id="img2img_upload_mask",
                        )
                with gr.Tab("Batch", id="batch", elem_id="img2img_batch_tab") as tab_batch:
                    batch = _build_batch_inputs()
            for tab_component, name in (
                (tab_img2img, "img2img"),
                (tab_sketch, "sketch"),
                (tab_inpaint, "inpaint"),
                (tab_inpaint_sketch, "inpaint_sketch"),
                (tab_upload, "inpaint_upload"),
                (tab_batch, "batch"),
            ):
                tab_component.select(lambda n=name: n, outputs=mode, show_progress="hidden", api_visibility="private")
            fields: dict[str, Any] = {}
            fields["resize_mode"] = gr.Radio(
                RESIZE_MODES, value=RESIZE_MODES[0], type="index", label="Resize mode", elem_id="img2img_resize_mode"
            )
            fields["denoising_strength"] = gr.Slider(
                0.0, 1.0, value=0.75, step=0.01, label="Denoising strength", elem_id="img2img_denoising_strength"
            )
            sampling, seed_buttons = build_sampling_fields(KIND, samplers, schedules, backend.native_size())
            fields.update(sampling)
            fields.update(build_refiner_fields(KIND, backend.checkpoint_titles()))
            with gr.Accordion("Inpainting", open=False, elem_id="img2img_inpaint_controls"):
                fields["mask_blur"] = gr.Slider(
                    0, 64, value=4, step=1, precision=0, label="Mask blur", elem_id="img2img_mask_blur"
                )
                fields["inpainting_mask_invert"] = gr.Radio(
                    MASK_MODES, value=MASK_MODES[0], type="index", label="Mask mode", elem_id="img2img_mask_mode"
                )
                fields["inpainting_fill"] = gr.Radio(
                    MASKED_CONTENT,
                    value="original",
                    type="index",
                    label="Masked content",
                    elem_id="img2img_inpainting_fill",
                )
                with gr.Row():
                    fields["inpaint_full_res"] = gr.Radio(
                        INPAINT_AREAS,
                        value=INPAINT_AREAS[0],
                        type="index",
                        label="Inpaint area",
                        elem_id="img2img_inpaint_full_res",
                    )
                    fields["inpaint_full_res_padding"] = gr.Slider(
                        0,
                        256,
                        value=32,
                        step=4,
                        precision=0,
                        label="Only masked padding, pixels",
                        elem_id="img2img_inpaint_full_res_padding",
                    )
            scripts = build_scripts(KIND, backend)
        with gr.Column(scale=1, min_width=380, elem_id=f"{KIND}_results"):
            output = build_output_panel(KIND)
    extra["mode"], extra["mode_tabs"] = mode, mode_tabs
    extra.update({f"batch_{name}": box for name, box in batch.items()})
    tab = GenerationTab(KIND, row, fields, output, extra, scripts)
    inputs = [mode, extra["init_image"], extra["inpaint_editor"], extra["upload_image"], extra["upload_mask"]]
    inputs += [extra["sketch"], extra["inpaint_sketch"], extra["mask_transparency"]]
    images_count = len(inputs)
    inputs += list(batch.values())

    def make_request(values: dict[str, Any], extra_values: list[Any]):
        if extra_values[0] == "batch":
            return make_img2img_batch(backend, values, *extra_values[images_count:])
        return make_img2img_request(backend, values, *extra_values[:images_count])

    wire_generation(
        tab,
        backend,
        queue,
        checkpoint,
        inputs,
        make_request,
        run_request=lambda request, control, scripts: run_img2img_job(backend, request, control, scripts),
    )
    wire_seed_buttons(tab, seed_buttons)
    return tab
