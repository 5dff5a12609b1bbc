"""Real PNG files for the emulator's storage origin, written with zlib only (no Pillow).

`preview_png` draws a picture that is a pure function of a key (the emulator uses the
request's model, prompt and image index): two colours, a gradient and a pattern chosen by
the key's hash, with a dark band reading EMULATOR at the bottom, so a contact sheet of
emulator output shows which image came from which prompt, and that none of them is real.
Pixels are built row by row with bytes operations (slicing, ``bytes.translate``), never
one pixel at a time in Python, so a 256x256 image costs 1 to 2 ms.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from typing import Final

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: The label drawn on every emulator picture.
LABEL: Final = "EMULATOR"
#: Shading levels of the vertical gradient (one ``bytes.translate`` table each).
_LEVELS: Final = 16
# A 5x7 bitmap of each letter of LABEL, one string of five pixels per row.
_FONT: Final[dict[str, tuple[str, ...]]] = {
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
}
_BAND: Final = b"\x18\x18\x1c"  # the label band's background
_INK: Final = b"\xff\xff\xff"  # the label's letters

Rgb = tuple[int, int, int]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rows: list[bytes]) -> bytes:
    """A PNG of `height` RGB rows of `width` pixels (3 bytes each, no filter byte)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 1))
        + _chunk(b"IEND", b"")
    )


def solid_png(rgb: Rgb, *, width: int = 16, height: int = 16) -> bytes:
    """A valid `width` x `height` PNG filled with one colour."""
    return encode_png(width, height, [bytes(rgb) * width] * height)


@functools.lru_cache(maxsize=64)  # at most a few MB: retried downloads hit it
def preview_png(key: str, width: int, height: int) -> bytes:
    """A `width` x `height` PNG that differs visibly per `key` and is marked EMULATOR.

    The same key and size always give the same bytes (cached: retried downloads are free).
    """
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    first, second = _vivid(digest[0:3]), _vivid(digest[3:6])
    base = _gradient_row(first, second, width)
    rows = _pattern(base, width, height, kind=digest[6] % 4, cell=4 + digest[7] % 13)
    band = _label_rows(width, height)
    if band:
        rows[height - len(band) :] = band
    return encode_png(width, height, rows)


def _vivid(seed: bytes) -> Rgb:
    """A saturated colour from three hash bytes (raw hash bytes often look grey)."""
    hue, low = seed[0] % 6, 40 + seed[1] % 60
    high, mid = 200 + seed[2] % 56, low + (seed[2] * 7) % (200 - low)
    return [
        (high, mid, low),
        (mid, high, low),
        (low, high, mid),
        (low, mid, high),
        (mid, low, high),
        (high, low, mid),
    ][hue]


def _gradient_row(left: Rgb, right: Rgb, width: int) -> bytes:
    """One row fading from `left` to `right`."""
    span = max(width - 1, 1)
    return bytes(
        round(a + (b - a) * x / span)
        for x in range(width)
        for a, b in zip(left, right, strict=True)
    )


def _shade_tables() -> list[bytes]:
    """Byte maps from full brightness down to about half, one per level."""
    return [
        bytes(round(v * (1.0 - 0.45 * level / (_LEVELS - 1))) for v in range(256))
        for level in range(_LEVELS)
    ]


_SHADES: Final = _shade_tables()
_DIM: Final = bytes(round(v * 0.72) for v in range(256))


def _pattern(base: bytes, width: int, height: int, *, kind: int, cell: int) -> list[bytes]:
    """Rows of `base` overlaid with stripes, bands, checks or diagonals `cell` pixels wide,
    darkening from top to bottom."""
    dim = base.translate(_DIM)
    phases: dict[int, bytes] = {}

    def striped(phase: int) -> bytes:
        if phase not in phases:
            phases[phase] = _stripes(base, dim, width, cell, phase)
        return phases[phase]

    rows: list[bytes] = []
    for y in range(height):
        if kind == 0:  # vertical stripes
            row = striped(0)
        elif kind == 1:  # horizontal bands
            row = base if (y // cell) % 2 == 0 else dim
        elif kind == 2:  # checks
            row = striped(0 if (y // cell) % 2 == 0 else cell)
        else:  # diagonal stripes: the stripes shifted one pixel per row
            row = striped(y % (2 * cell))
        rows.append(row.translate(_SHADES[y * _LEVELS // height]))
    return rows


def _stripes(base: bytes, dim: bytes, width: int, cell: int, phase: int) -> bytes:
    """`base` with every other run of `cell` pixels taken from `dim`, shifted by `phase`."""
    parts: list[bytes] = []
    x = 0
    while x < width:
        run_end = min(width, x + cell - (x + phase) % cell)
        source = base if ((x + phase) // cell) % 2 == 0 else dim
        parts.append(source[3 * x : 3 * run_end])
        x = run_end
    return b"".join(parts)


def _label_rows(width: int, height: int) -> list[bytes]:
    """The bottom band reading EMULATOR, scaled to the image; none if it cannot fit."""
    glyph_width = 6 * len(LABEL) - 1  # five pixels per letter and one between
    scale = min(width * 3 // 4 // glyph_width, max(height // 18 // 7, 1))
    if scale < 1 or height < 7 * scale + 4:
        return []
    pad = max(scale, 2)
    left = (width - glyph_width * scale) // 2
    blank = _BAND * width
    rows = [blank] * pad
    for line in range(7):
        pixels = "".join(_FONT[letter][line] + "." for letter in LABEL)[:glyph_width]
        text = b"".join((_INK if pixel == "#" else _BAND) * scale for pixel in pixels)
        row = _BAND * left + text + _BAND * (width - left - glyph_width * scale)
        rows.extend([row] * scale)
    rows.extend([blank] * pad)
    return rows
