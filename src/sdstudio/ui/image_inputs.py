"""The page's image boxes, checked against img_max_decode_mp before Gradio decodes what was dropped.

Gradio decodes an uploaded image in full (and converts its mode) before an event's function
runs, under Pillow's default limits only; a small file declaring a huge size would be a big
allocation, or past Pillow's own limit an error naming nothing. These boxes first pass the
file to an `ImageCheck` (`UiBackend.check_image`: the size its header declares against the
setting, nothing decoded) and refuse it as a gr.Error naming the request field.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from sdstudio.errors import InvalidRequest

ImageCheck = Callable[[bytes | Path, str], None]
"""`check(file or data, field)`: raises InvalidRequest naming `field` for an image that may not be decoded."""


def check_upload(check: ImageCheck, upload: Any, field: str) -> None:
    """Run `check` on what Gradio received for an image (a file, or a data: URL); a refusal is a gr.Error."""
    if upload is None:
        return
    path, url = getattr(upload, "path", None), getattr(upload, "url", None)
    if isinstance(upload, (bytes, bytearray)):
        source: bytes | Path = bytes(upload)
    elif isinstance(url, str) and url.startswith("data:"):  # Gradio reads a data: URL before the file
        try:
            source = base64.b64decode(url.partition(",")[2])
        except (binascii.Error, ValueError):
            raise gr.Error(f"{field}: not valid base64 image data") from None
    elif path:
        source = Path(path)
    else:
        return  # nothing Gradio would decode here
    try:
        check(source, field)
    except InvalidRequest as exc:
        raise gr.Error(str(exc)) from None


# The check wraps the box's own decoding step. Not a subclass: Gradio writes a .pyi stub next to
# the module of every Component subclass and builds the page's props from the subclass's __init__.


def checked_image(check: ImageCheck, field: str, **kwargs: Any) -> gr.Image:
    """gr.Image(**kwargs) whose upload is checked by `check` (as request field `field`) before Gradio decodes it."""
    box = gr.Image(**kwargs)
    decode = box.preprocess

    def preprocess(payload):
        check_upload(check, payload, field)
        return decode(payload)

    box.preprocess = preprocess  # type: ignore[method-assign]
    return box


def checked_image_editor(check: ImageCheck, field: str, **kwargs: Any) -> gr.ImageEditor:
    """gr.ImageEditor(**kwargs) whose background, layers and composite are each checked before Gradio decodes them."""
    box = gr.ImageEditor(**kwargs)
    decode = box.convert_and_format_image

    def convert_and_format_image(file, flatten_on_white: bool = False):
        check_upload(check, file, field)
        return decode(file, flatten_on_white=flatten_on_white)

    box.convert_and_format_image = convert_and_format_image  # type: ignore[method-assign]
    return box
