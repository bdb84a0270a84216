"""Hostile values, each with a short label that names it in a report.

What an attacker or a careless client sends: NaN and infinities (as the raw JSON tokens
`NaN`/`Infinity`, which Python's json module writes and reads), huge and negative numbers,
wrong types, long and malformed strings, paths that leave the data dir, prompts that make a
parser work hard, and images that are not what they claim (decompression bombs, corrupt
base64). Values are built once per generator; the largest, the bomb PNGs, are kept small on
the wire (tens of KB) while declaring hundreds of millions of pixels.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from PIL import Image

LONG_TEXT = 100_000  # characters: "very long" strings, 100 KB on the wire


@dataclass(frozen=True)
class Hostile:
    """One value for a field and the label that names it in a report."""

    label: str
    value: Any


NUMBERS = (
    Hostile("NaN", float("nan")),
    Hostile("Infinity", float("inf")),
    Hostile("-Infinity", float("-inf")),
    Hostile("1e308", 1e308),
    Hostile("-1e308", -1e308),
    Hostile("5e-324", 5e-324),
    Hostile("2**63", 2**63),
    Hostile("-2**63", -(2**63)),
    Hostile("2**31", 2**31),
    Hostile("10**6", 10**6),
    Hostile("-1", -1),
    Hostile("0", 0),
    Hostile("-0.0", -0.0),
    Hostile("1.5", 1.5),
)

STRINGS = (
    Hostile("empty string", ""),
    Hostile("100 KB string", "a" * LONG_TEXT),
    Hostile("20k non-ASCII", "é" * 20_000),
    Hostile("lone surrogate", "x\ud800y"),
    Hostile("null byte", "a\x00b"),
    Hostile("numeric string", "5"),
)

PATHS = (
    Hostile("../../etc/passwd", "../../etc/passwd"),
    Hostile("/etc/passwd", "/etc/passwd"),
    Hostile("~/.ssh/id_rsa", "~/.ssh/id_rsa"),
    Hostile("/proc/self/environ", "/proc/self/environ"),
    Hostile("C:\\Windows", "C:\\Windows\\System32\\config\\SAM"),
    Hostile("outputs/../../x", "outputs/../../../x"),
    Hostile("/etc/passwd/x", "/etc/passwd/x"),
    Hostile("file:///etc/passwd", "file:///etc/passwd"),
    Hostile("/dev/zero", "/dev/zero"),
)

WRONG_TYPES = (
    Hostile("[]", []),
    Hostile("['x']", ["x"]),
    Hostile("{}", {}),
    Hostile("{'a': 1}", {"a": 1}),
    Hostile("true", True),
    Hostile("null", None),
    Hostile("nested list", [[[[[[[[["x"]]]]]]]]]),
)

GENERIC = NUMBERS + STRINGS + PATHS + WRONG_TYPES
"""Sent to every field, whatever its type."""

PROMPTS = (
    Hostile("'[' * 5000", "[" * 5000),
    Hostile("'(' * 5000", "(" * 5000),
    Hostile("300 [a:b:0.5] tags", "[a:b:0.5] " * 300),
    Hostile("500 [a|b] tags", "[a|b]" * 500),
    Hostile("2000 ANDs", "a AND " * 2000),
    Hostile("50k spaces", " " * 50_000 + "x"),
    Hostile("(x:1e308)", "(x:1e308)"),
    Hostile("(x:nan)", "(x:nan) [x:y:nan] [x:y:1e999]"),
    Hostile("<lora:../../etc/passwd:1>", "a <lora:../../etc/passwd:1> <lora:/etc/passwd:nan>"),
    Hostile("<hypernet:/etc/passwd:1>", "<hypernet:/etc/passwd:1> <lyco:~/.ssh/id_rsa:1>"),
    Hostile("100 KB words", "a " * (LONG_TEXT // 2)),
)
"""Also sent to prompt-like fields: text the prompt parser and the tokenizer read."""


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of width x height zeros: ~50 KB that decodes to `width * height` pixels."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return PNG_SIGNATURE + header + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def text_bomb_png(megabytes: int = 64) -> bytes:
    """A 1x1 PNG whose compressed `parameters` text chunk inflates to `megabytes` MB."""
    pixel = io.BytesIO()
    Image.new("L", (1, 1)).save(pixel, format="PNG")
    plain = pixel.getvalue()
    compressor = zlib.compressobj(9)
    block = b"A" * (1 << 20)
    text = b"".join(compressor.compress(block) for _ in range(megabytes)) + compressor.flush()
    chunk = png_chunk(b"zTXt", b"parameters\x00\x00" + text)
    return plain[:33] + chunk + plain[33:]  # after the signature and IHDR (8 + 25 bytes)


def png_bytes(size: tuple[int, int], mode: str = "RGB") -> bytes:
    """A plain PNG of `size` in `mode`."""
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_values() -> tuple[Hostile, ...]:
    """Values for a base64-image field: bombs, corrupt base64, odd modes and sizes, paths and URLs."""
    bomb = b64(bomb_png())
    return (
        Hostile("bomb PNG 20000x20000", bomb),
        Hostile("data-URL bomb PNG", "data:image/png;base64," + bomb),
        Hostile("zTXt bomb PNG", b64(text_bomb_png())),
        Hostile("corrupt base64", "!!not*base64%%" * 10),
        Hostile("base64 of text", b64(b"hello, not an image")),
        Hostile("truncated PNG", b64(png_bytes((64, 64))[:60])),
        Hostile("empty data URL", "data:image/png;base64,"),
        Hostile("PNG 1x1", b64(png_bytes((1, 1)))),
        Hostile("PNG 1x3000", b64(png_bytes((1, 3000)))),
        Hostile("PNG 40x24", b64(png_bytes((40, 24)))),
        Hostile("PNG mode I;16", b64(png_bytes((64, 64), "I;16"))),
        Hostile("PNG mode LA", b64(png_bytes((64, 64), "LA"))),
        Hostile("PNG mode P", b64(png_bytes((64, 64), "P"))),
        Hostile("http URL", "http://127.0.0.1:9/x.png"),
    )


PADDED = b" " * (1 << 20)
"""Sent before the route's own valid body: JSON allows the whitespace, a server may not want to read it."""

# Whole bodies that are not the JSON object a route expects.
RAW_BODIES = (
    Hostile("NaN body", b"NaN"),
    Hostile("list body", b"[]"),
    Hostile("string body", b'"x"'),
    Hostile("null body", b"null"),
    Hostile("empty body", b""),
    Hostile("broken JSON", b'{"prompt": '),
    Hostile("deep JSON 100k", b"[" * 100_000 + b"]" * 100_000),
    Hostile("invalid UTF-8", b'{"prompt": "\xff\xfe"}'),
    Hostile("1 MB of spaces, then the body", PADDED),
)

# Query strings for routes that take none (or, for /progress, its one parameter).
QUERY_VALUES = (
    Hostile("NaN", "NaN"),
    Hostile("2**63", str(2**63)),
    Hostile("../../etc/passwd", "../../etc/passwd"),
    Hostile("8 KB string", "a" * 8000),  # servers cap the request line (h11: 64 KB)
    Hostile("null byte", "a\x00b"),
    Hostile("true", "true"),
)
