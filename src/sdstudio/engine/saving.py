"""Saving images as A1111 does: folders, numbered names, infotext inside the file, grids.

Layout (A1111 modules/images.py save_image): `<outdir>/<YYYY-MM-DD>/NNNNN-SEED-PROMPT.png`
for images and `<grid outdir>/<YYYY-MM-DD>/grid-NNNN.png` for grids, where NNNNN is one
more than the highest number already in the folder. The infotext goes into a PNG `tEXt`
chunk named `parameters`, or the EXIF UserComment of JPEG/WebP files, which is where
A1111, Civitai and image browsers look. Every file is written atomically (temp file +
rename), so a crash never leaves half an image under a real name.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from PIL import Image, PngImagePlugin

from sdstudio.config import DataPaths, Settings, atomic_write_bytes
from sdstudio.errors import InvalidRequest

INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
MAX_FILENAME_PART_LENGTH = 128  # characters of prompt or pattern in a name (A1111 max_filename_part_length)
MAX_FILENAME_BYTES = 255  # the whole name, in the file system's encoding (ext4, NTFS, APFS...)


def sanitize_filename_part(text: str, replace_spaces: bool = True) -> str:
    """Make text safe inside a file name (A1111 sanitize_filename_part)."""
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(c): "_" for c in INVALID_FILENAME_CHARS})
    text = "".join(c for c in text if c.isprintable())  # also drops lone surrogates, which no file name can hold
    text = text.lstrip(" ")[:MAX_FILENAME_PART_LENGTH]
    return text.rstrip(" .")


# atomic_write_bytes first writes ".NAME.XXXXXXXX.tmp" (tempfile.mkstemp): that name has to fit as well.
_ATOMIC_TEMP_NAME_EXTRA_BYTES = len("..") + 8 + len(".tmp")


def file_name_byte_limit(folder: Path) -> int:
    """The longest name in bytes an image saved atomically in `folder` may have (file system and temp name)."""
    try:
        longest = min(MAX_FILENAME_BYTES, os.statvfs(folder).f_namemax)
    except (AttributeError, OSError):  # no statvfs on Windows
        longest = MAX_FILENAME_BYTES
    return longest - _ATOMIC_TEMP_NAME_EXTRA_BYTES


def fit_file_name(stem: str, decoration: str, suffix: str, limit: int = MAX_FILENAME_BYTES) -> str:
    """`stem + decoration + suffix`, with the decoration cut (never mid-character) so the name fits `limit` bytes."""
    room = limit - len((stem + suffix).encode("utf-8", "ignore"))
    encoded = decoration.encode("utf-8", "ignore")
    if len(encoded) > room:
        decoration = encoded[: max(room, 0)].decode("utf-8", "ignore").rstrip(" .")
    return f"{stem}{decoration}{suffix}"


def next_sequence_number(folder: Path, basename: str = "") -> int:
    """One more than the highest leading number of files in `folder` (A1111 get_next_sequence_number)."""
    result = -1
    prefix = f"{basename}-" if basename else ""
    if folder.is_dir():
        for name in os.listdir(folder):
            if not name.startswith(prefix):
                continue
            parts = os.path.splitext(name[len(prefix) :])[0].split("-")
            try:
                result = max(int(parts[0]), result)
            except ValueError:
                pass
    return result + 1


def image_grid(
    images: Sequence[Image.Image], rows: int | None = None, n_rows: int = -1, batch_size: int = 1
) -> Image.Image:
    """Tile images into a grid; rows as A1111: n_rows > 0 fixed, 0 = batch size, -1 = round(sqrt(n)).

    Cells are as large as the largest image; a smaller one is centred in its cell (A1111 1.10).
    """
    if rows is None:
        if n_rows > 0:
            rows = n_rows
        elif n_rows == 0:
            rows = batch_size
        else:
            rows = max(1, round(math.sqrt(len(images))))
    rows = min(rows, len(images))
    cols = math.ceil(len(images) / rows)
    w, h = max(img.width for img in images), max(img.height for img in images)
    grid = Image.new("RGB", size=(cols * w, rows * h), color="black")
    for i, img in enumerate(images):
        grid.paste(img, box=(i % cols * w + (w - img.width) // 2, i // cols * h + (h - img.height) // 2))
    return grid


def encode_image(
    image: Image.Image, extension: str, infotext: str | None, jpeg_quality: int = 80, webp_lossless: bool = False
) -> bytes:
    """The file bytes of an image with its infotext embedded."""
    buffer = io.BytesIO()
    ext = extension.lower().lstrip(".")
    if ext == "png":
        info = PngImagePlugin.PngInfo()
        if infotext:
            info.add_text("parameters", infotext)
        image.save(buffer, format="PNG", pnginfo=info)
    elif ext in ("jpg", "jpeg", "webp"):
        exif = _exif_user_comment(infotext) if infotext else b""
        rgb = image.convert("RGB") if image.mode not in ("RGB", "L") else image
        if ext == "webp":
            rgb.save(buffer, format="WEBP", quality=jpeg_quality, lossless=webp_lossless, exif=exif)
        else:
            rgb.save(buffer, format="JPEG", quality=jpeg_quality, exif=exif)
    else:
        raise ValueError(f"unsupported image format {extension!r} (use png, jpg or webp)")
    return buffer.getvalue()


def _exif_user_comment(text: str) -> bytes:
    import piexif
    import piexif.helper

    exif: bytes = piexif.dump(
        {"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(text, encoding="unicode")}}
    )  # piexif is untyped
    return exif


def read_infotext(image: Image.Image) -> str | None:
    """The infotext stored in an image (PNG `parameters` or EXIF UserComment), or None."""
    text = image.info.get("parameters")
    if isinstance(text, str) and text:
        return text
    exif_bytes = image.info.get("exif")
    if exif_bytes:
        import piexif
        import piexif.helper

        try:
            exif = piexif.load(exif_bytes)
            comment = exif.get("Exif", {}).get(piexif.ExifIFD.UserComment)
            if comment:
                user_comment: str = piexif.helper.UserComment.load(comment)  # piexif is untyped
                return user_comment
        except (ValueError, KeyError, OSError, TypeError):
            return None
    return None


class ImageSaver:
    """Writes generated images and grids under the data dir following Settings."""

    def __init__(self, paths: DataPaths, settings: Settings, on_file: Callable[[Path], None] | None = None):
        self.paths = paths
        self.settings = settings
        self.on_file = on_file
        """Told each file's path just before it is written, so a crash between the two leaves no file untold."""

    def output_folder(
        self, kind: str, grid: bool = False, override: str | None = None, now: datetime | None = None
    ) -> Path:
        """The folder for a job kind ("txt2img"/"img2img"), with the date subfolder when enabled.

        `override` is a folder the local user named (the CLI's --outdir) and may be anywhere;
        folders from settings are confined to the data dir (the settings store refuses others).
        """
        s = self.settings
        if override:
            base = Path(override).expanduser().resolve()
        else:
            folder = (
                (s.outdir_grids or getattr(s, f"outdir_{kind}_grids"))
                if grid
                else (s.outdir_samples or getattr(s, f"outdir_{kind}_samples"))
            )
            try:
                base = self.paths.resolve_inside(folder)
            except ValueError as exc:
                raise InvalidRequest("outdir_grids" if grid else "outdir_samples", str(exc)) from None
        if s.save_to_dirs:
            base = base / (now or datetime.now()).strftime("%Y-%m-%d")
        return base

    def save_image(
        self,
        image: Image.Image,
        folder: Path,
        seed: int | None,
        prompt: str,
        infotext: str | None,
        extension: str | None = None,
        basename: str = "",
    ) -> Path:
        """Save one image as NNNNN-SEED-PROMPT.ext (or BASENAME-NNNN.ext) and return its path."""
        ext = (extension or self.settings.samples_format or "png").lower()
        data = encode_image(
            image,
            ext,
            infotext if self.settings.enable_pnginfo else None,
            self.settings.jpeg_quality,
            self.settings.webp_lossless,
        )
        folder.mkdir(parents=True, exist_ok=True)
        if basename:
            decoration = ""
        elif self.settings.samples_filename_pattern:
            decoration = sanitize_filename_part(
                self.settings.samples_filename_pattern.replace("[seed]", str(seed)).replace("[prompt]", prompt),
                replace_spaces=False,
            )
        else:
            decoration = "-".join(
                p
                for p in (str(seed) if seed is not None else "", sanitize_filename_part(prompt, replace_spaces=False))
                if p
            )
        decoration = f"-{decoration}" if decoration else ""
        number = next_sequence_number(folder, basename)
        limit = file_name_byte_limit(folder)
        for attempt in range(500):
            stem = f"{number + attempt:05}" if not basename else f"{basename}-{number + attempt:04}"
            path = folder / fit_file_name(stem, decoration, f".{ext}", limit)
            if not path.exists():
                break
        if self.on_file is not None:
            self.on_file(path)
        atomic_write_bytes(path, data)
        return path

    def save_grid(self, grid: Image.Image, folder: Path, infotext: str | None) -> Path:
        """Save a grid as grid-NNNN.ext."""
        return self.save_image(grid, folder, None, "", infotext, extension=self.settings.grid_format, basename="grid")
