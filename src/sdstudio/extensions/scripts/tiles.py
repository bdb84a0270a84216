"""Overlapping tiles of an image and their seamless recombination (A1111 `images.split_grid` / `combine_grid`).

SD upscale and Poor man's outpainting process a large image tile by tile at the job's
width × height: `split_grid` cuts it into tiles spaced evenly so that neighbours overlap by
at least `overlap` pixels (the last row and column end flush with the image), and
`combine_grid` pastes the (processed) tiles back, fading each tile in over its left and top
`overlap` pixels so that no seam shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image


@dataclass
class Tile:
    """One tile: its left edge, its width, and its image (replace `image` with the processed one)."""

    x: int
    width: int
    image: Image.Image


@dataclass
class TileRow:
    """One row of tiles: its top edge and height."""

    y: int
    height: int
    tiles: list[Tile] = field(default_factory=list)


@dataclass
class Grid:
    """An image cut into rows of overlapping tiles."""

    rows: list[TileRow]
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int

    @property
    def columns(self) -> int:
        return len(self.rows[0].tiles) if self.rows else 0

    @property
    def tile_count(self) -> int:
        return sum(len(row.tiles) for row in self.rows)

    def tiles(self) -> Iterator[tuple[TileRow, Tile]]:
        """Every tile with its row, row by row, left to right."""
        for row in self.rows:
            for tile in row.tiles:
                yield row, tile


def tile_counts(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> tuple[int, int]:
    """(columns, rows) of tiles `split_grid` cuts a width × height image into."""
    if overlap < 0 or overlap >= min(tile_w, tile_h):
        raise ValueError(f"the overlap ({overlap}) must be at least 0 and below the tile size ({tile_w}x{tile_h})")

    def count(size: int, tile: int) -> int:
        return max(1, math.ceil((size - overlap) / (tile - overlap)))

    return count(width, tile_w), count(height, tile_h)


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """`image` cut into tile_w × tile_h tiles that overlap their neighbours by at least `overlap` pixels."""
    width, height = image.size
    columns, rows = tile_counts(width, height, tile_w, tile_h, overlap)

    def starts(count: int, size: int, tile: int) -> list[int]:
        step = (size - tile) / (count - 1) if count > 1 else 0
        # The last tile ends flush with the image (an image smaller than a tile gets one tile, padded).
        return [size - tile if int(i * step) + tile >= size else int(i * step) for i in range(count)]

    grid = Grid([], tile_w, tile_h, width, height, overlap)
    for y in starts(rows, height, tile_h):
        row = TileRow(y, tile_h)
        for x in starts(columns, width, tile_w):
            row.tiles.append(Tile(x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))))
        grid.rows.append(row)
    return grid


def _ramp(length: int, across: int, horizontal: bool) -> Image.Image:
    """A mask rising linearly from 0 over `length` pixels (along x when `horizontal`), `across` pixels wide."""
    values = bytes(int(i * 255 / length) for i in range(length))
    if horizontal:
        return Image.frombytes("L", (length, 1), values).resize((length, across), Image.Resampling.NEAREST)
    return Image.frombytes("L", (1, length), values).resize((across, length), Image.Resampling.NEAREST)


def combine_grid(grid: Grid) -> Image.Image:
    """The tiles pasted back into one image, each faded in over the `overlap` pixels it shares with the last."""
    overlap = grid.overlap
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for row in grid.rows:
        strip = Image.new("RGB", (grid.image_w, row.height))
        for tile in row.tiles:
            image = tile.image.convert("RGB")
            if tile.x == 0 or overlap == 0:
                strip.paste(image, (tile.x, 0))
                continue
            strip.paste(
                image.crop((0, 0, overlap, row.height)), (tile.x, 0), _ramp(overlap, row.height, horizontal=True)
            )
            strip.paste(image.crop((overlap, 0, tile.width, row.height)), (tile.x + overlap, 0))
        if row.y == 0 or overlap == 0:
            combined.paste(strip, (0, row.y))
            continue
        combined.paste(strip.crop((0, 0, grid.image_w, overlap)), (0, row.y), _ramp(overlap, grid.image_w, False))
        combined.paste(strip.crop((0, overlap, grid.image_w, row.height)), (0, row.y + overlap))
    return combined


def outpaint_sides(size: int, before: int, after: int) -> tuple[int, int]:
    """(before, after) widened in proportion so that size + both is a multiple of 64 (A1111's outpainting)."""
    target = math.ceil((size + before + after) / 64) * 64
    if before > 0:
        before = before * (target - size) // (before + after)
    if after > 0:
        after = target - size - before
    return before, after
