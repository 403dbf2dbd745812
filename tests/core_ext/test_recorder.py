"""The recording ring's C side: batch, index, records and the scan that cuts a torn tail."""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

from core_ext.gop import GopCache
from core_ext.recorder import RECORD_HEADER, Recorder, crc32, read_record, realtime_ns, scan

EPOCH = time.time_ns() // 1_000_000 - 60_000


def _write(rec: Recorder, path: Path) -> int:
    """Take, write and commit the batch (what the writer thread does); the chunk it went to."""
    chunk = rec.take(1 << 30)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        assert rec.write_taken(fd) == 0
    finally:
        os.close(fd)
    rec.commit()
    return chunk


def test_crc_is_ieee() -> None:
    data = os.urandom(1000)
    assert crc32(data) == zlib.crc32(data)


def test_units_are_indexed_after_the_write_and_read_back(tmp_path: Path) -> None:
    rec = Recorder(EPOCH, 1000, 10_000)
    slot = rec.camera("cam-1")
    before = realtime_ns()
    units = [(os.urandom(100 + i), 3000 * i, i % 5 == 0) for i in range(12)]
    for data, pts, key in units:
        rec.append(slot, data, pts, key)
    assert rec.count(slot) == 0  # batched, not yet on disk: not in the index
    path = tmp_path / "0.chunk"
    _write(rec, path)
    assert rec.count(slot) == 12
    raw = path.read_bytes()
    for i, (_, chunk, offset, length, key) in enumerate(rec.entries(slot, 0, 12)):
        wall, pts, keyframe, camera, data = read_record(raw[offset : offset + RECORD_HEADER + 5 + length])
        assert (data, pts, keyframe, camera, chunk) == (*units[i], "cam-1", 0)
        assert key == keyframe and wall >= before
    newest = rec.entries(slot, 11, 12)[0][0]
    assert rec.locate(slot, newest) == 10  # the keyframe at or before it
    assert rec.range(slot) == (rec.entries(slot, 0, 1)[0][0], newest)


def test_a_camera_records_from_its_first_keyframe_and_again_after_a_break() -> None:
    rec = Recorder(EPOCH, 1000, 10_000)
    slot = rec.camera("cam")
    rec.append(slot, b"p", 0, False)
    assert (rec.units, rec.skipped) == (0, 1)
    rec.append(slot, b"k", 1, True)
    rec.break_stream(slot)
    rec.append(slot, b"p", 2, False)
    assert (rec.units, rec.skipped) == (1, 2)


def test_the_index_is_bounded_per_camera(tmp_path: Path) -> None:
    rec = Recorder(EPOCH, 50, 10_000)
    slot = rec.camera("cam")
    for i in range(200):
        rec.append(slot, b"x" * 10, i, i % 10 == 0)
        if i % 30 == 29:
            _write(rec, tmp_path / "0.chunk")
    _write(rec, tmp_path / "0.chunk")
    assert rec.count(slot) == 50 and rec.total_entries == 50
    assert rec.index_bytes < 200 * 16


def test_dropping_a_chunk_drops_its_entries(tmp_path: Path) -> None:
    rec = Recorder(EPOCH, 1000, 10_000)
    a, b = rec.camera("a"), rec.camera("b")
    rec.append(a, b"1", 0, True)
    rec.append(b, b"2", 0, True)
    _write(rec, tmp_path / "0.chunk")
    rec.rotate()
    rec.append(a, b"3", 1, True)
    assert _write(rec, tmp_path / "1.chunk") == 1
    rec.drop_chunk(0)
    assert (rec.count(a), rec.count(b), rec.total_entries) == (1, 0, 1)


def test_scan_cuts_a_torn_record() -> None:
    rec = Recorder(EPOCH, 1000, 10_000)
    slot = rec.camera("cam")
    for i in range(5):
        rec.append(slot, bytes([i]) * 500, i, i == 0)
    rec.take(1 << 30)
    r, w = os.pipe()
    try:
        rec.write_taken(w)
        raw = os.read(r, 1 << 20)
    finally:
        os.close(r)
        os.close(w)
    whole, _, entries = scan(raw)
    assert whole == len(raw) and len(entries) == 5 * 32
    good, names, entries = scan(raw[:-100])  # the last record lost its tail
    assert good == len(raw) - (RECORD_HEADER + 3 + 500) and names == [b"cam"] and len(entries) == 4 * 32
    damaged = bytearray(raw)
    damaged[good + RECORD_HEADER + 3] ^= 0xFF  # a flipped first data byte of the last record
    assert scan(bytes(damaged))[0] == good


def test_a_stopped_recorder_drops_units_and_counts_them() -> None:
    rec = Recorder(EPOCH, 1000, 10_000)
    slot = rec.camera("cam")
    rec.append(slot, b"k", 0, True)
    rec.stop()
    rec.append(slot, b"k", 1, True)
    assert (rec.pending_bytes, rec.dropped, rec.take(0)) == (0, 2, -1)


def test_the_gop_cache_copies_every_unit_it_adds_into_its_recorder() -> None:
    class Unit:
        def __init__(self, data: bytes, pts: int, keyframe: bool) -> None:
            self.data, self.pts, self.keyframe = data, pts, keyframe

    rec = Recorder(EPOCH, 1000, 10_000)
    cache = GopCache(1 << 20, 100)
    cache.recorder, cache.record_slot = rec, rec.camera("cam")
    cache.add(Unit(b"\0\0\0\1k", 0, True), 0.0)
    cache.add(Unit(b"\0\0\0\1p", 1, False), 0.0)
    assert (rec.units, rec.bytes_in) == (2, 10)
    cache.clear()  # the stream broke: recording resumes at a keyframe
    cache.add(Unit(b"\0\0\0\1p", 2, False), 0.0)
    assert (rec.units, rec.skipped) == (2, 1)
