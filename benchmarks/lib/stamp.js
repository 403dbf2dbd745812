// Wall-clock stamp decoder for video frames: the JS twin of benchmarks/stamp.py (same layout, same
// algorithm; tests/test_stamp.py checks they agree). Top band of the frame: two rows of 40 cells, row 0 =
// 32 stamp bits (ms since the epoch mod 2^32, MSB first) + CRC-8, row 1 = the same bits inverted.
"use strict";

const STAMP_CELLS = 40;
const STAMP_DATA_BITS = 32;
const STAMP_MIN_CONTRAST = 60;

function stampCrc8(value) {
  let crc = 0;
  for (const shift of [24, 16, 8, 0]) {
    crc ^= (value >>> shift) & 0xff;
    for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
  }
  return crc;
}

// Mean over the central half of a cell, on a 4x4 grid of samples.
function stampCellMean(luma, col, row, cell) {
  const x0 = (col + 0.25) * cell, y0 = (row + 0.25) * cell, step = cell / 2 / 4;
  let sum = 0;
  for (let i = 0; i < 4; i++)
    for (let j = 0; j < 4; j++) sum += luma(Math.floor(x0 + (i + 0.5) * step), Math.floor(y0 + (j + 0.5) * step));
  return sum / 16;
}

// luma(x, y) -> 0..255 for a frame `width` pixels wide; returns the stamp or null (no stamp / bad CRC).
function decodeStamp(luma, width) {
  const cell = width / STAMP_CELLS;
  let value = 0, crc = 0;
  for (let i = 0; i < STAMP_CELLS; i++) {
    const diff = stampCellMean(luma, i, 0, cell) - stampCellMean(luma, i, 1, cell);
    if (Math.abs(diff) < STAMP_MIN_CONTRAST) return null;
    const bit = diff > 0 ? 1 : 0;
    if (i < STAMP_DATA_BITS) value = ((value << 1) | bit) >>> 0;
    else crc = (crc << 1) | bit;
  }
  return stampCrc8(value) === crc ? value : null;
}

// An ImageData (RGBA, e.g. from a canvas the video was drawn into): gray = mean of R, G, B.
function decodeImageData(img) {
  const d = img.data, w = img.width;
  return decodeStamp((x, y) => { const k = (y * w + x) * 4; return (d[k] + d[k + 1] + d[k + 2]) / 3; }, w);
}

// now - stamp in ms (signed), nowMs since the epoch; undoes the stamp's mod 2^32 wrap.
function stampAgeMs(stamp, nowMs) {
  let d = (nowMs - stamp) % 4294967296;
  if (d < 0) d += 4294967296;
  return d >= 2147483648 ? d - 4294967296 : d;
}

if (typeof module !== "undefined") module.exports = { decodeStamp, decodeImageData, stampAgeMs, stampCrc8 };
