"""img2img's Sketch and Inpaint sketch: colour strokes over the init image, composed as A1111 does.

Gradio's ImageEditor hands over the image (`background`) and the painted layers separately.
Sketch: the strokes over the image are the init image. Inpaint sketch: the strokes give the
new colours and, where painted, the mask; A1111 then blends the blurred painting into the
original under the blurred mask (its "Mask transparency" dims the mask first).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image, ImageEnhance, ImageFilter

from sdstudio.errors import InvalidRequest
from sdstudio.ui.image_inputs import ImageCheck, checked_image_editor

SKETCH_MODES = ("sketch", "inpaint_sketch")
# A1111's default brush colours offered for sketching (any colour can be picked).
SKETCH_COLORS: list[str | tuple[str, float]] = ["#ffffff", "#000000", "#ff0000", "#00ff00", "#0000ff", "#ffff00"]


def editor_layers(value: dict[str, Any] | None, where: str) -> tuple[Image.Image, Image.Image]:
    """(image, strokes) of an ImageEditor value: the background on white, and every layer flattened (RGBA)."""
    if not value or value.get("background") is None:
        raise InvalidRequest("init_images", f"draw on an image: drop one into the {where} canvas first")
    background = value["background"].convert("RGBA")
    image = Image.new("RGBA", background.size, (255, 255, 255, 255))
    image.alpha_composite(background)
    strokes = Image.new("RGBA", background.size, (0, 0, 0, 0))
    for layer in value.get("layers") or []:
        if layer is not None:
            layer = layer.convert("RGBA")
            strokes.alpha_composite(layer if layer.size == image.size else layer.resize(image.size))
    return image, strokes


def painted_mask(strokes: Image.Image) -> Image.Image:
    """White wherever a stroke left any paint, black elsewhere (mode L)."""
    return strokes.getchannel("A").point(lambda a: 255 if a > 0 else 0)


def compose_sketch(image: Image.Image, strokes: Image.Image) -> Image.Image:
    """Sketch: the strokes painted over the image, as the RGB init image."""
    return Image.alpha_composite(image.convert("RGBA"), strokes).convert("RGB")


def compose_inpaint_sketch(
    image: Image.Image, strokes: Image.Image, mask_blur: int = 0, mask_transparency: float = 0
) -> tuple[Image.Image, Image.Image]:
    """Inpaint sketch: (init image, mask) where the strokes are the new colours and, dimmed by
    `mask_transparency` percent, the mask; the painting is blended in with `mask_blur` (A1111)."""
    original = image.convert("RGB")
    painted = compose_sketch(image, strokes)
    mask = ImageEnhance.Brightness(painted_mask(strokes)).enhance(1 - float(mask_transparency) / 100)
    blur = ImageFilter.GaussianBlur(max(0, int(mask_blur)))
    return Image.composite(painted.filter(blur), original, mask.filter(blur)), mask


def sketch_images(
    mode: str,
    sketch: dict[str, Any] | None,
    inpaint_sketch: dict[str, Any] | None,
    mask_blur: int = 0,
    mask_transparency: float = 0,
) -> tuple[Image.Image, Image.Image | None]:
    """(init image, mask) of a sketch mode from its editor; Sketch has no mask (the whole image is redrawn)."""
    if mode == "sketch":
        return compose_sketch(*editor_layers(sketch, "sketch")), None
    image, strokes = editor_layers(inpaint_sketch, "inpaint sketch")
    return compose_inpaint_sketch(image, strokes, int(mask_blur or 0), float(mask_transparency or 0))


def sketch_editor(label: str, elem_id: str, check: ImageCheck) -> gr.ImageEditor:
    """A canvas to drop an image into and paint over it in colour (what is dropped is checked by `check`)."""
    return checked_image_editor(
        check=check,
        field="init_images",
        label=label,
        type="pil",
        image_mode="RGBA",
        sources=["upload", "clipboard"],
        height=300,
        elem_id=elem_id,
        brush=gr.Brush(colors=SKETCH_COLORS, default_color=SKETCH_COLORS[0], color_mode="defaults"),
        layers=False,
        transforms=(),
    )


def build_sketch_tab(extra: dict[str, Any], check: ImageCheck):
    """The Sketch tab (inside the img2img mode tabs); its editor goes into `extra["sketch"]`."""
    with gr.Tab("Sketch", id="sketch", elem_id="img2img_sketch_tab", render_children=True) as tab:
        extra["sketch"] = sketch_editor("Sketch over the image: it becomes the init image", "img2img_sketch", check)
    return tab


def build_inpaint_sketch_tab(extra: dict[str, Any], check: ImageCheck):
    """The Inpaint sketch tab; its editor and Mask transparency go into `extra`."""
    with gr.Tab(
        "Inpaint sketch", id="inpaint_sketch", elem_id="img2img_inpaint_sketch_tab", render_children=True
    ) as tab:
        extra["inpaint_sketch"] = sketch_editor(
            "Paint in colour: the strokes are the new colours and the area to change", "img2img_inpaint_sketch", check
        )
        extra["mask_transparency"] = gr.Slider(
            0, 100, value=0, step=1, label="Mask transparency", elem_id="img2img_mask_alpha"
        )
    return tab
