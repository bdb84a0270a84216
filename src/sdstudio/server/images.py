"""Images on the wire: base64 PNG with infotext out (base64 in is decoded by `engine.request.decode_base64_image`)."""

from __future__ import annotations

import base64
import io

from PIL import Image, PngImagePlugin


def encode_image_base64(image: Image.Image, infotext: str | None = None) -> str:
    """Base64 PNG of `image`, with the infotext in its `parameters` chunk when given."""
    metadata = PngImagePlugin.PngInfo()
    text = infotext if infotext is not None else image.info.get("parameters")
    if isinstance(text, str) and text:
        metadata.add_text("parameters", text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=metadata)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
