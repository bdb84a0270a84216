"""Invisible watermark (DWT-DCT, `invisible-watermark`), as the CompVis scripts/txt2img.py does.

CompVis encodes the bytes of "StableDiffusionV1" (Stability's SD 2 scripts use "SDV2") into
the BGR image with method 'dwtDct'; decoding reads the same number of bits back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdstudio.errors import InvalidRequest

DEFAULT_WATERMARK = "StableDiffusionV1"
"""The message CompVis txt2img.py embeds."""

WATERMARK_METHOD = "dwtDct"
MIN_PIXELS = 256 * 256
"""imwatermark refuses images with fewer pixels than this."""


def add_watermark(image: Image.Image, message: str = DEFAULT_WATERMARK) -> Image.Image:
    """The image with `message` embedded invisibly (CompVis put_watermark)."""
    import cv2
    from imwatermark import WatermarkEncoder

    _check_size(image)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", message.encode("utf-8"))
    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    marked = encoder.encode(bgr, WATERMARK_METHOD)
    return Image.fromarray(np.ascontiguousarray(marked[:, :, ::-1]), "RGB")


@dataclass(frozen=True)
class DecodedWatermark:
    """What decoding found: the text (None when the bytes are not UTF-8) and the raw bytes."""

    text: str | None
    raw: bytes

    def matches(self, message: str) -> bool:
        """Whether the decoded bytes are exactly `message`."""
        return self.raw == message.encode("utf-8")


def decode_watermark(
    image: Image.Image, length_bytes: int = len(DEFAULT_WATERMARK.encode("utf-8"))
) -> DecodedWatermark:
    """Read `length_bytes` bytes of DWT-DCT watermark from an image."""
    import cv2
    from imwatermark import WatermarkDecoder

    if length_bytes < 1:
        raise InvalidRequest("length", f"must be at least 1 byte, got {length_bytes}")
    _check_size(image)
    decoder = WatermarkDecoder("bytes", length_bytes * 8)
    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    raw = bytes(decoder.decode(bgr, WATERMARK_METHOD))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return DecodedWatermark(text, raw)


def _check_size(image: Image.Image) -> None:
    if image.width * image.height < MIN_PIXELS:
        raise InvalidRequest(
            "image",
            f"{image.width}x{image.height} is too small for an invisible watermark (needs at least 256x256 pixels)",
        )
