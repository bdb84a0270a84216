"""Reading images with their text metadata and writing PNGs that keep it.

A small helper for post-processing, which sits below the engine and so cannot use
engine/saving.py: PNG text chunks (A1111's `parameters`, `postprocessing`, `extras`) are
read from `Image.info`, the JPEG/WebP EXIF UserComment (where A1111 puts infotext in
those formats) is read as `parameters`, and PNGs are written atomically with the chunks.
The `key: value, ...` line of an infotext is written here too, for the engine's
generation parameters and post-processing's alike.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from sdstudio.config import IMAGE_DECODE_LIMIT_MP, atomic_write_bytes
from sdstudio.errors import InvalidRequest, NotFound

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
"""Files taken from a folder in batch mode."""

_SKIPPED_INFO_KEYS = {
    "exif",
    "icc_profile",
    "dpi",
    "gamma",
    "transparency",
    "aspect",
    "chromaticity",
    "srgb",
    "interlace",
    "progressive",
    "progression",
    "jfif",
    "jfif_version",
    "jfif_unit",
    "jfif_density",
    "adobe",
    "adobe_transform",
    "loop",
    "duration",
    "background",
    "timestamp",
    "photoshop",
    "xmp",
}


def decode_client_image(source: bytes | Path, field: str, max_megapixels: float = IMAGE_DECODE_LIMIT_MP) -> Image.Image:
    """An image from a client (API data, an upload, a file named on the command line), decoded in full.

    The one place such images are decoded. The size the file declares is checked against
    `max_megapixels` (the img_max_decode_mp setting) before any pixel is decoded, so a small
    file claiming a huge size is an InvalidRequest naming `field`, never a memory blow-up;
    data Pillow cannot decode is one too. Text chunks (PNG infotext) are kept in `info`.
    """
    with _opened_client_image(source, field, max_megapixels) as opened:
        opened.load()
        image = opened.copy()
        image.info = dict(opened.info)
        return image


def check_client_image(source: bytes | Path, field: str, max_megapixels: float = IMAGE_DECODE_LIMIT_MP) -> None:
    """Refuse a client image that `decode_client_image` would refuse for its size, reading its header only.

    For images another library decodes (the web UI's upload boxes): an image over `max_megapixels`
    or data that is not an image is an InvalidRequest naming `field` before any pixel is decoded.
    """
    with _opened_client_image(source, field, max_megapixels):
        pass


@contextmanager
def _opened_client_image(source: bytes | Path, field: str, max_megapixels: float) -> Iterator[Image.Image]:
    """The client image opened (header read) and its declared size checked; Pillow's errors as InvalidRequest."""
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as opened:
            _refuse_oversized(opened.size, field, max_megapixels)
            yield opened
    except Image.DecompressionBombError:  # over Pillow's own hard limit, found while opening
        raise _oversized(field, max_megapixels, "") from None
    except InvalidRequest:
        raise
    except FileNotFoundError as exc:
        raise InvalidRequest(field, f"image file not found: {exc.filename}") from None
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, struct.error... on hostile data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = f"{source.name} is " if isinstance(source, Path) else ""
        raise InvalidRequest(field, f"{where}not a decodable image ({reason})") from None


def _refuse_oversized(size: tuple[int, int], field: str, max_megapixels: float) -> None:
    width, height = size
    if width * height > max_megapixels * 1_000_000:
        raise _oversized(field, max_megapixels, f" ({width}×{height} = {width * height / 1e6:.1f} megapixels)")


def _oversized(field: str, max_megapixels: float, actual: str) -> InvalidRequest:
    return InvalidRequest(
        field, f"image too large{actual}: the limit is {max_megapixels:g} megapixels (setting img_max_decode_mp)"
    )


def open_image(
    path: str | os.PathLike, field: str = "image", max_megapixels: float = IMAGE_DECODE_LIMIT_MP
) -> Image.Image:
    """Open an image file fully through `decode_client_image`; errors name the file.

    A JPEG/WebP EXIF UserComment (where A1111 writes infotext in those formats) becomes `parameters`.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{field}: no such file {str(path)!r}")
    image = decode_client_image(path, field, max_megapixels)
    if "parameters" not in image.info:
        comment = _exif_user_comment(image)
        if comment:
            image.info["parameters"] = comment
    return image


def quote(value: Any) -> str:
    """JSON-quote a value that contains ',', ':' or a newline (A1111 infotext_utils.quote)."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo `quote` (A1111 infotext_utils.unquote)."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_infotext_parameters(params: dict[str, Any]) -> str:
    """`key: value, ...` as A1111 joins infotext parameters.

    Values are quoted, None is left out, and a key stands alone when its value is itself.
    """
    return ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)


def text_items(image: Image.Image) -> dict[str, str]:
    """The image's text metadata (PNG chunks; `parameters` first), binary entries left out."""
    items = {}
    for key, value in image.info.items():
        if key in _SKIPPED_INFO_KEYS or not isinstance(key, str):
            continue
        if isinstance(value, bytes):
            continue
        if isinstance(value, str):
            items[key] = value
    if "parameters" in items:
        items = {"parameters": items.pop("parameters"), **items}
    return items


def encode_png(image: Image.Image, items: dict[str, str]) -> bytes:
    """PNG bytes with each item as a text chunk (iTXt when not Latin-1, as Pillow chooses)."""
    info = PngImagePlugin.PngInfo()
    for key, value in items.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path, items: dict[str, str]) -> Path:
    """Write a PNG with text chunks atomically (a crash never leaves half a file)."""
    atomic_write_bytes(path, encode_png(image, items))
    return path


def next_free_number(folder: Path) -> int:
    """One more than the highest leading number of the files in a folder (A1111 numbering)."""
    highest = -1
    if folder.is_dir():
        for entry in folder.iterdir():
            digits = ""
            for char in entry.name:
                if not char.isdigit():
                    break
                digits += char
            if digits:
                highest = max(highest, int(digits))
    return highest + 1


def _exif_user_comment(image: Image.Image) -> str | None:
    try:
        comment = image.getexif().get_ifd(0x8769).get(0x9286)  # Exif IFD, UserComment
    except Exception:
        return None
    if isinstance(comment, bytes):
        if comment.startswith(b"UNICODE\0"):
            body = comment[8:]
            for encoding in ("utf-16-be", "utf-16-le"):
                try:
                    return body.decode(encoding)
                except UnicodeDecodeError:
                    continue
            return None
        if comment.startswith(b"ASCII\0\0\0"):
            return comment[8:].decode("ascii", errors="replace")
        return comment.decode("utf-8", errors="replace") or None
    return comment or None
