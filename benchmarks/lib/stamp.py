"""A wall-clock stamp drawn into video frames, and its decoder (the browser page has the same in JS).

Pure Python (no numpy): the clock camera runs under Debian's /usr/bin/python3, which has no numpy.

Layout (scaled to the frame width; 640x360 gives 16x16-pixel cells, one H.264 macroblock each, so the
cells stay flat through compression): the top band is two rows of 40 cells.
    row 0: 32 bits of the stamp (ms since the epoch mod 2**32, MSB first), then 8 bits of CRC-8
    row 1: the same 40 bits inverted
A bit is read as the sign of (row 0 cell - row 1 cell), so the decoder needs no threshold, and every
pair must differ by at least MIN_CONTRAST, which rejects frames without a stamp. The CRC rejects the
rest. Cells are sampled in their central half only, away from block edges and scaling blur.
"""

from __future__ import annotations

from collections.abc import Callable

CELLS = 40  # per row: 32 stamp bits + 8 CRC bits
DATA_BITS = 32
CRC_BITS = 8
BLACK, WHITE, BACKGROUND = 16, 235, 128  # video-range luma
MIN_CONTRAST = 60  # of the 0..255 luma range, between a cell and its inverse


def crc8(value: int) -> int:
    """CRC-8 (polynomial 0x07) of the stamp's 4 bytes, big-endian."""
    crc = 0
    for byte in value.to_bytes(4, "big"):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def stamp_bits(stamp_ms: int) -> list[int]:
    """The 40 bits of row 0 for a stamp (ms, taken mod 2**32)."""
    value = stamp_ms % 2**32
    word = (value << CRC_BITS) | crc8(value)
    return [(word >> (CELLS - 1 - i)) & 1 for i in range(CELLS)]


def cell_size(width: int) -> int:
    return width // CELLS


def band_rows(stamp_ms: int, width: int) -> bytes:
    """Luma bytes of the stamp band: 2 * cell rows of `width` pixels (8-bit, video range)."""
    cell = cell_size(width)
    bits = stamp_bits(stamp_ms)
    pad = bytes([BACKGROUND]) * (width - cell * CELLS)
    rows = []
    for inverted in (0, 1):
        line = b"".join(bytes([WHITE if bit ^ inverted else BLACK]) * cell for bit in bits) + pad
        rows.append(line * cell)
    return b"".join(rows)


def decode(luma: Callable[[int, int], float], width: int) -> int | None:
    """The stamp in a frame whose luma at (x, y) `luma` returns, or None when there is none.

    `width` is the width of the frame as sampled (it may be scaled from the camera's).
    """
    cell = width / CELLS
    word = 0
    for i in range(CELLS):
        diff = _cell_mean(luma, i, 0, cell) - _cell_mean(luma, i, 1, cell)
        if abs(diff) < MIN_CONTRAST:
            return None
        word = (word << 1) | (diff > 0)
    value = word >> CRC_BITS
    return value if crc8(value) == word & 0xFF else None


def _cell_mean(luma: Callable[[int, int], float], col: int, row: int, cell: float) -> float:
    """Mean over the central half of a cell, on a 4x4 grid of samples."""
    x0, y0 = (col + 0.25) * cell, (row + 0.25) * cell
    step = cell / 2 / 4
    samples = [luma(int(x0 + (i + 0.5) * step), int(y0 + (j + 0.5) * step)) for i in range(4) for j in range(4)]
    return sum(samples) / len(samples)


def decode_gray(plane: bytes, width: int, stride: int | None = None) -> int | None:
    """decode() for an 8-bit gray / luma plane (e.g. ffmpeg `-pix_fmt gray` output)."""
    pitch = stride or width
    return decode(lambda x, y: plane[y * pitch + x], width)


def age_ms(stamp: int, now_ms: int) -> int:
    """now - stamp in ms (signed), `now_ms` since the epoch; undoes the stamp's mod 2**32 wrap."""
    return (now_ms - stamp + 2**31) % 2**32 - 2**31
