"""Legends around a grid of images: A1111's annotated grid (modules/images.py draw_grid_annotations).

A grid of equal cells gets a column of texts on its left (one list per row) and a band of
texts on top (one list per column). A text that does not apply to its row or column
(`active=False`, as in the prompt matrix) is drawn grey and struck through. Long texts wrap
at word boundaries to the space they have. Cells may be set apart by a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

ACTIVE = (0, 0, 0)
INACTIVE = (153, 153, 153)
MIN_FONT_SIZE = 8  # A1111's (width + height) / 25 is unreadable on small cells


@dataclass
class GridAnnotation:
    """One line of a legend (A1111 images.GridAnnotation)."""

    text: str = ""
    is_active: bool = True


@dataclass
class _Line:
    text: str
    is_active: bool
    width: int
    height: int


def legend_font(cell_width: int, cell_height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The legend font: Pillow's built-in one, sized to the cells as A1111 sizes its font."""
    return ImageFont.load_default(size=max(MIN_FONT_SIZE, (cell_width + cell_height) // 25))


def _wrapped(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, room: int
) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and draw.textlength(candidate, font=font) > room:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _measured(
    draw: ImageDraw.ImageDraw,
    texts: list[GridAnnotation],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    room: int,
) -> list[_Line]:
    lines = []
    for annotation in texts:
        for text in _wrapped(draw, annotation.text, font, room):
            left, top, right, bottom = draw.textbbox((0, 0), text or " ", font=font)
            lines.append(_Line(text, annotation.is_active, int(right - left), int(bottom - top)))
    return lines


def _block_height(lines: list[_Line], spacing: int) -> int:
    return sum(line.height + spacing for line in lines) - spacing if lines else 0


def _draw_block(
    draw: ImageDraw.ImageDraw,
    center_x: float,
    top: float,
    lines: list[_Line],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    spacing: int,
) -> None:
    y = top
    for line in lines:
        middle = y + line.height / 2
        color = ACTIVE if line.is_active else INACTIVE
        draw.text((center_x, middle), line.text, font=font, fill=color, anchor="mm")
        if not line.is_active:
            draw.line((center_x - line.width / 2, middle, center_x + line.width / 2, middle), fill=color, width=1)
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
        raise ValueError(f"a {cols}×{rows} grid needs {cols} column and {rows} row legends")
    font = legend_font(cell_width, cell_height)
    spacing = max(1, int(getattr(font, "size", MIN_FONT_SIZE)) // 2)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    has_row_texts = any(a.text for texts in ver_texts for a in texts)
    pad_left = cell_width * 3 // 4 if has_row_texts else 0
    columns = [_measured(measure, texts, font, cell_width) for texts in hor_texts]
    row_lines = [_measured(measure, texts, font, pad_left) for texts in ver_texts]
    column_heights = [_block_height(lines, spacing) for lines in columns]
    pad_top = max(column_heights) + spacing * 2 if any(column_heights) else 0

    result = Image.new(
        "RGB", (grid.width + pad_left + margin * (cols - 1), grid.height + pad_top + margin * (rows - 1)), "white"
    )
    for row in range(rows):
        for col in range(cols):
            cell = grid.crop((cell_width * col, cell_height * row, cell_width * (col + 1), cell_height * (row + 1)))
            result.paste(cell, (pad_left + (cell_width + margin) * col, pad_top + (cell_height + margin) * row))
    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(columns):
        center = pad_left + (cell_width + margin) * col + cell_width / 2
        _draw_block(draw, center, pad_top / 2 - column_heights[col] / 2, lines, font, spacing)
    for row, lines in enumerate(row_lines):
        middle = pad_top + (cell_height + margin) * row + cell_height / 2
        _draw_block(draw, pad_left / 2, middle - _block_height(lines, spacing) / 2, lines, font, spacing)
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
