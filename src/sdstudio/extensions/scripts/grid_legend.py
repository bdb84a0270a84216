"""Legends around a grid of images: A1111's annotated grid (modules/images.py draw_grid_annotations).

A grid of equal cells gets a band of texts on top (one list per column) and a column of
texts on its left (one list per row); a side whose texts are all empty takes no room. A
text that does not apply to its row or column (`is_active=False`, as in the prompt matrix)
is drawn grey and struck through. Texts wrap at spaces to the room they have, and a word
too long for it is drawn smaller. Cells may be set `margin` pixels apart. Text is drawn
with Pillow's built-in font, sized to the cells as A1111 sizes its font.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

ACTIVE = (0, 0, 0)  # A1111's grid_text_active_color, grid_text_inactive_color, grid_background_color
INACTIVE = (153, 153, 153)
BACKGROUND = (255, 255, 255)
MIN_FONT_SIZE = 8  # A1111's (width + height) / 25 is unreadable on small cells

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass
class GridAnnotation:
    """One text of a legend (A1111 images.GridAnnotation)."""

    text: str = ""
    is_active: bool = True


@dataclass
class _Line:
    text: str
    is_active: bool
    width: int
    height: int
    room: int  # the width it may take


def legend_font(size: int) -> Font:
    """Pillow's built-in font at `size` pixels (no font files needed)."""
    return ImageFont.load_default(size=max(1, size))


def _wrapped(draw: ImageDraw.ImageDraw, text: str, font: Font, room: int) -> list[str]:
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if draw.textlength(candidate, font=font) <= room or not lines[-1]:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _measured(draw: ImageDraw.ImageDraw, texts: list[GridAnnotation], font: Font, room: int) -> list[_Line]:
    lines = []
    for annotation in texts:
        for text in _wrapped(draw, annotation.text, font, room):
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            lines.append(_Line(text, annotation.is_active, int(right - left), int(bottom - top), room))
    return lines


def _block_height(lines: list[_Line], spacing: int) -> int:
    return sum(line.height + spacing for line in lines) - spacing if lines else 0


def _draw_block(
    draw: ImageDraw.ImageDraw, center_x: float, top: float, lines: list[_Line], font_size: int, spacing: int
) -> None:
    y = top
    for line in lines:
        size = font_size
        font = legend_font(size)
        while size > 1 and draw.textlength(line.text, font=font) > line.room:
            size -= 1
            font = legend_font(size)
        middle = y + line.height / 2
        color = ACTIVE if line.is_active else INACTIVE
        draw.text((center_x, middle), line.text, font=font, fill=color, anchor="mm")
        if not line.is_active:
            half = line.width / 2
            draw.line((center_x - half, middle, center_x + half, middle), fill=color, width=max(1, font_size // 8))
        y += line.height + spacing


def draw_grid_annotations(
    grid: Image.Image,
    cell_width: int,
    cell_height: int,
    hor_texts: list[list[GridAnnotation]],
    ver_texts: list[list[GridAnnotation]],
    margin: int = 0,
) -> Image.Image:
    """`grid` with `hor_texts` above its columns and `ver_texts` left of its rows, cells `margin` apart."""
    cols, rows = grid.width // cell_width, grid.height // cell_height
    if len(hor_texts) != cols or len(ver_texts) != rows:
        raise ValueError(
            f"a {cols}×{rows} grid needs {cols} column and {rows} row legends, "
            f"got {len(hor_texts)} and {len(ver_texts)}"
        )
    font_size = max(MIN_FONT_SIZE, (cell_width + cell_height) // 25)
    font = legend_font(font_size)
    spacing = font_size // 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    has_row_texts = any(annotation.text for texts in ver_texts for annotation in texts)
    pad_left = cell_width * 3 // 4 if has_row_texts else 0
    columns = [_measured(measure, texts, font, cell_width) for texts in hor_texts]
    row_lines = [_measured(measure, texts, font, pad_left) for texts in ver_texts]
    column_heights = [_block_height(lines, spacing) for lines in columns]
    pad_top = max(column_heights) + spacing * 2 if any(column_heights) else 0

    size = (grid.width + pad_left + margin * (cols - 1), grid.height + pad_top + margin * (rows - 1))
    result = Image.new("RGB", size, BACKGROUND)
    for row in range(rows):
        for col in range(cols):
            cell = grid.crop((cell_width * col, cell_height * row, cell_width * (col + 1), cell_height * (row + 1)))
            result.paste(cell, (pad_left + (cell_width + margin) * col, pad_top + (cell_height + margin) * row))
    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(columns):
        center = pad_left + (cell_width + margin) * col + cell_width / 2
        _draw_block(draw, center, pad_top / 2 - column_heights[col] / 2, lines, font_size, spacing)
    for row, lines in enumerate(row_lines):
        middle = pad_top + (cell_height + margin) * row + cell_height / 2
        _draw_block(draw, pad_left / 2, middle - _block_height(lines, spacing) / 2, lines, font_size, spacing)
    return result


def draw_prompt_matrix(
    grid: Image.Image, cell_width: int, cell_height: int, parts: list[str], margin: int = 0
) -> Image.Image:
    """The prompt matrix legend: the first half of the optional parts over the columns, the rest by the rows.

    `parts` is the split prompt (`a|b|c`): parts[0] is in every image; cell i has optional
    part k when bit k of i is set, so each legend line is active where its bit is.
    """
    optional = parts[1:]
    split = math.ceil(len(optional) / 2)
    across, down = optional[:split], optional[split:]

    def legends(texts: list[str]) -> list[list[GridAnnotation]]:
        return [
            [GridAnnotation(text, is_active=bool(position & (1 << bit))) for bit, text in enumerate(texts)]
            for position in range(1 << len(texts))
        ]

    return draw_grid_annotations(grid, cell_width, cell_height, legends(across), legends(down), margin)
