"""The PNG Info tab: drop an image, read its generation parameters, send them on."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from sdstudio.config import IMAGE_DECODE_LIMIT_MP
from sdstudio.errors import InvalidRequest
from sdstudio.ui.image_inputs import ImageCheck, checked_image


@dataclass
class PngInfoTab:
    """The dropped image, its infotext, and the send buttons (wired by the page)."""

    image: Any
    infotext: Any  # gr.State with the raw infotext
    html: Any
    send_to_txt2img: Any
    send_to_img2img: Any
    send_to_inpaint: Any
    send_to_extras: Any


def read_image_info(path: str | None, max_megapixels: float = IMAGE_DECODE_LIMIT_MP) -> tuple[str, str]:
    """(infotext, html) for an uploaded image file: its parameters and any other text chunks."""
    from sdstudio.engine.saving import read_infotext
    from sdstudio.postprocess.image_files import decode_client_image

    if not path:
        return "", ""
    try:
        image = decode_client_image(Path(path), "image", max_megapixels)
    except InvalidRequest as exc:
        return (
            "",
            '<div class="sdstudio-status sdstudio-status-error">'
            f"{html.escape(f'could not read the image: {exc.reason}')}</div>",
        )
    infotext = read_infotext(image) or ""
    items = {
        k: v
        for k, v in image.info.items()
        if isinstance(k, str) and isinstance(v, str) and k not in ("parameters", "exif")
    }
    parts = []
    if infotext:
        lines = "".join(f"<p>{html.escape(line)}</p>" for line in infotext.split("\n"))
        parts.append(f'<div class="sdstudio-infotext"><h3>parameters</h3>{lines}</div>')
    for key, value in items.items():
        parts.append(f'<div class="sdstudio-infotext"><h3>{html.escape(key)}</h3><p>{html.escape(value)}</p></div>')
    if not parts:
        parts.append('<div class="sdstudio-status">No generation parameters in this image.</div>')
    return infotext, "".join(parts)


def build_pnginfo_tab(
    check: ImageCheck, image_limit: Callable[[], float] = lambda: IMAGE_DECODE_LIMIT_MP
) -> PngInfoTab:
    """Build the tab (inside an open gr.Tab); `check` refuses a dropped image before Gradio reads it,
    `image_limit` gives the img_max_decode_mp setting in force."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=380):
            # filepath with no mode conversion: Gradio hands over the uploaded file untouched, text chunks included.
            image = checked_image(
                check=check,
                field="image",
                label="Source",
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                height=420,
                elem_id="pnginfo_image",
            )
        with gr.Column(scale=1, min_width=380):
            info_html = gr.HTML("", elem_id="pnginfo_html")
            infotext = gr.State("")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img", size="sm")
                to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img", size="sm")
                to_inpaint = gr.Button("Send to inpaint", elem_id="pnginfo_send_to_inpaint", size="sm")
                to_extras = gr.Button("Send to extras", elem_id="pnginfo_send_to_extras", size="sm")
    image.change(
        lambda path: read_image_info(path, image_limit()),
        inputs=image,
        outputs=[infotext, info_html],
        show_progress="hidden",
        api_visibility="private",
    )
    return PngInfoTab(image, infotext, info_html, to_txt2img, to_img2img, to_inpaint, to_extras)
