"""Images on the wire: base64 (data-URL prefix accepted) in, base64 PNG with infotext out."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from sdstudio.errors import InvalidRequest


def decode_base64_image(encoded: str, field: str) -> Image.Image:
    """A PIL image from a base64 string; a clear error naming `field` when it is not one."""
    if not isinstance(encoded, str) or not encoded:
        raise InvalidRequest(field, "expected a base64-encoded image")
    if encoded.startswith(("http://", "https://")):
        raise InvalidRequest(field, "image URLs are not fetched (sdstudio works offline); send base64 data")
    if encoded.startswith("data:"):
        _, _, encoded = encoded.partition(",")
    try:
        raw = base64.b64decode(encoded, validate=False)
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as exc:
        raise InvalidRequest(field, f"not a decodable image ({exc.__class__.__name__})") from None
    return image


def encode_image_base64(image: Image.Image, infotext: str | None = None) -> str:
    """Base64 PNG of `image`, with the infotext in its `parameters` chunk when given."""
    metadata = PngImagePlugin.PngInfo()
    text = infotext if infotext is not None else image.info.get("parameters")
    if isinstance(text, str) and text:
        metadata.add_text("parameters", text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=metadata)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
