"""The recording ring of one worker: the last `window_s` seconds of every camera it ingests, on disk, bounded.

Layout: one directory per worker holding append-only chunk files `<id>.chunk` (ids rising). Every unit a hub
caches is copied into an in-memory batch in C (core_ext/recorder.pyx, called from core_ext/gop.pyx on both the
Python and the C path), so the event loop does no file work per frame. A writer thread writes the batch with the
GIL released every `flush_s` or `flush_bytes`, then indexes its units; a chunk past `chunk_bytes` or `chunk_s`
gets its index footer and the next one opens. Chunks go whole, oldest first, once their newest unit is older than
the window or the ring is past `max_bytes`.

Recovery (start-up, also after kill -9): each chunk's footer is read; a chunk without one (the one being written)
is scanned record by record, cut after its last whole record and sealed with a footer. What a kill loses is the
batch not yet written: at most `flush_s`.

A write error (ENOSPC, EFBIG past RLIMIT_FSIZE, EIO) stops recording: `state` says "stopped: <error>", one log
line says why, ingest and viewers go on.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core_ext.recorder import ENTRY_SIZE, FOOTER_MAGIC, RECORD_HEADER, TRAILER_SIZE, Recorder, read_record, scan

log = logging.getLogger(__name__)

EXPECTED_BPS = 500_000  # a sub-stream's rate for the start-up capacity check
MAX_FPS = 60  # index entries per camera-second the RAM bounds allow
ENTRY_BYTES = 16
_TRAILER = struct.Struct("<QIIII")


class RecordingError(Exception):
    """The ring can't be set up as asked (the message says what to change)."""


@dataclass(frozen=True, slots=True)
class RecordSettings:
    directory: str
    window_s: float = 120.0
    max_bytes: int = 0  # 0: whatever window x EXPECTED_BPS x cameras needs, checked against the disk
    max_index_bytes: int = 1 << 30  # RAM of the index, per worker
    flush_s: float = 1.0
    flush_bytes: int = 256 * 1024
    chunk_bytes: int = 64 * 1024 * 1024
    chunk_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Frame:
    wall_ns: int  # CLOCK_REALTIME when the unit completed
    pts: int  # 90 kHz
    keyframe: bool
    data: bytes


def required_bytes(window_s: float, cameras: int, bps: int = EXPECTED_BPS) -> int:
    return int(window_s * bps / 8 * cameras)


def check_capacity(directory: str, max_bytes: int, window_s: float, cameras: int) -> None:
    """Raise RecordingError when the cap can't hold the window at the expected rate, or the disk can't hold the cap
    (what the ring holds already counts as free: it is the ring's)."""
    need = required_bytes(window_s, cameras)
    if max_bytes and need > max_bytes:
        raise RecordingError(
            f"--record-max-bytes {max_bytes} holds {max_bytes * 8 / EXPECTED_BPS / max(cameras, 1):.0f} s of "
            f"{cameras} cameras at {EXPECTED_BPS // 1000} kbps; --record-seconds {window_s:g} needs {need} bytes"
        )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    have = st.f_bavail * st.f_frsize + sum(p.stat().st_size for p in path.rglob("*.chunk"))
    want = max_bytes or need
    if want > have:
        raise RecordingError(
            f"recording needs {want} bytes in {directory} ({cameras} cameras x {window_s:g} s at "
            f"{EXPECTED_BPS // 1000} kbps) but the disk has {have}: lower --record-seconds or free space"
        )


@dataclass(slots=True)
class _Chunk:
    id: int
    path: Path
    size: int
    newest_ns: int


class RecordingRing:
    """One worker's ring: `camera(id)` gives the slot a hub's cache records into; `range`/`frames` read back."""

    def __init__(self, settings: RecordSettings, name: str = "w0") -> None:
        self.settings = settings
        self.path = Path(settings.directory) / name
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one writer per ring, released by any death
        except BlockingIOError:
            os.close(self._lock)
            raise RecordingError(f"{self.path} is recorded by another process") from None
        self.max_bytes = settings.max_bytes or 1 << 62
        per_camera = int(settings.window_s * MAX_FPS * 1.25)
        epoch_ms = time.time_ns() // 1_000_000 - 86_400_000  # index times are u32 ms from here: 49 days ahead
        self.ring = Recorder(epoch_ms, per_camera, settings.max_index_bytes // ENTRY_BYTES)
        self._chunks: list[_Chunk] = []
        self.error: str | None = None
        self.deleted_chunks = 0
        self.recovered_units = 0
        self._recover()
        self._fd = -1
        self._chunk_started = time.monotonic()
        self._open_chunk()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"recording-{name}", daemon=True)
        self._thread.start()

    # --- cameras and reading back ---
    def camera(self, camera_id: str) -> int:
        return int(self.ring.camera(camera_id))

    def range(self, camera_id: str) -> tuple[float, float] | None:
        """(oldest keyframe, newest unit) on disk, wall-clock seconds; None if nothing is playable."""
        slot = self.ring.slot(camera_id)
        span = None if slot is None else self.ring.range(slot)
        return None if span is None else (span[0] / 1000, span[1] / 1000)

    def frames(self, camera_id: str, start_wall: float, limit: int | None = None) -> list[Frame]:
        """The keyframe at or before `start_wall` (seconds) and every unit after it (at most `limit`), from disk."""
        slot = self.ring.slot(camera_id)
        if slot is None:
            return []
        first = self.ring.locate(slot, int(start_wall * 1000))
        if first < 0:
            return []
        end = self.ring.count(slot) if limit is None else first + limit
        entries = self.ring.entries(slot, first, end)
        name_len = self.ring.name_length(slot)
        files: dict[int, int] = {}
        frames: list[Frame] = []
        try:
            for _, chunk, offset, length, _ in entries:
                fd = files.get(chunk)
                if fd is None:
                    fd = files[chunk] = os.open(self._chunk_path(chunk), os.O_RDONLY)
                wall_ns, pts, keyframe, _, data = read_record(os.pread(fd, RECORD_HEADER + name_len + length, offset))
                frames.append(Frame(wall_ns, pts, keyframe, data))
        except FileNotFoundError:
            pass  # the oldest chunk went while reading: what was read is still in order
        finally:
            for fd in files.values():
                os.close(fd)
        return frames

    # --- state ---
    @property
    def state(self) -> str:
        return "recording" if self.error is None else f"stopped: {self.error}"

    def stats(self) -> dict[str, Any]:
        r = self.ring
        return {
            "state": self.state, "cameras": r.cameras, "units": r.units, "bytes_in": r.bytes_in,
            "bytes_written": r.bytes_written, "dropped": r.dropped, "skipped": r.skipped,
            "index_entries": r.total_entries, "index_bytes": r.index_bytes, "chunks": len(self._chunks),
            "disk_bytes": sum(c.size for c in self._chunks), "deleted_chunks": self.deleted_chunks,
        }  # fmt: skip

    def close(self) -> None:
        """Write what is batched, seal the chunk with its footer, stop the thread."""
        self._stop.set()
        self._thread.join(timeout=10)
        if self.error is None:
            self._flush()
            self._seal()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        os.close(self._lock)

    # --- the writer thread ---
    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.02) and self.error is None:
            now = time.monotonic()
            if self.ring.pending_bytes >= self.settings.flush_bytes or now - last >= self.settings.flush_s:
                last = now
                self._flush()

    def _flush(self) -> None:
        chunk = self.ring.take(self._rotate_at())
        if chunk < 0:
            return
        err = self.ring.write_taken(self._fd)
        if err:
            self._fail(err)
            return
        newest = self.ring.commit()
        current = self._chunks[-1]
        current.size = os.fstat(self._fd).st_size
        current.newest_ns = max(current.newest_ns, newest)
        if self.ring.chunk != chunk:  # the batch was the chunk's last
            if self._seal():
                self._open_chunk()
        self._expire()

    def _rotate_at(self) -> int:
        if time.monotonic() - self._chunk_started >= self.settings.chunk_s:
            return 0
        return min(self.settings.chunk_bytes, max(self.max_bytes // 8, 1 << 20))

    def _seal(self) -> bool:
        """Write the current chunk's footer; False (and recording stopped) if that fails."""
        current = self._chunks[-1]
        footer = self.ring.footer(current.size)
        try:
            os.write(self._fd, footer)
        except OSError as exc:
            self._fail(exc.errno or errno.EIO)
            return False
        current.size += len(footer)
        os.close(self._fd)
        self._fd = -1
        return True

    def _open_chunk(self) -> None:
        chunk = self.ring.chunk
        path = self._chunk_path(chunk)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._chunks.append(_Chunk(chunk, path, 0, 0))
        self._chunk_started = time.monotonic()

    def _expire(self) -> None:
        """Delete whole chunks, oldest first, past the window or the byte cap (never the one being written)."""
        horizon = time.time_ns() - int(self.settings.window_s * 1e9)
        while len(self._chunks) > 1:
            oldest = self._chunks[0]
            total = sum(c.size for c in self._chunks)
            if oldest.newest_ns >= horizon and total <= self.max_bytes:
                break
            self.ring.drop_chunk(oldest.id)
            oldest.path.unlink(missing_ok=True)
            self._chunks.pop(0)
            self.deleted_chunks += 1

    def _fail(self, err: int) -> None:
        self.error = f"{errno.errorcode.get(err, err)} ({os.strerror(err)})"
        self.ring.stop()
        log.error("recording stopped in %s: %s; ingest and live viewers are not affected", self.path, self.error)

    def _chunk_path(self, chunk: int) -> Path:
        return self.path / f"{chunk:010d}.chunk"

    # --- recovery ---
    def _recover(self) -> None:
        paths = sorted(self.path.glob("*.chunk"))
        for path in paths:
            chunk = int(path.stem)
            data = path.read_bytes()
            parsed = _read_footer(data)
            if parsed is None:
                parsed = self._seal_torn(path, data)
            names, entries = parsed
            slots = [self.camera(name) for name in names]
            self.recovered_units += self.ring.load(chunk, entries, slots)
            newest = max((struct.unpack_from("<q", entries, i + 8)[0]
                          for i in range(0, len(entries), ENTRY_SIZE)), default=0)  # fmt: skip
            self._chunks.append(_Chunk(chunk, path, path.stat().st_size, newest))
            while self.ring.chunk <= chunk:
                self.ring.rotate()
        if paths:
            log.info("recording: recovered %d units from %d chunks in %s", self.recovered_units, len(paths), self.path)

    def _seal_torn(self, path: Path, data: bytes) -> tuple[list[str], bytes]:
        """A chunk without a footer (the writer died): cut it after its last whole record and seal it."""
        good, raw_names, entries = scan(data)
        names = [n.decode() for n in raw_names]
        with open(path, "r+b") as f:
            f.truncate(good)
            f.seek(good)
            f.write(_footer(names, entries, good))
        if good < len(data):
            log.warning("recording: %s cut at %d of %d bytes (torn tail)", path.name, good, len(data))
        return names, entries


def _footer(names: list[str], entries: bytes, start: int) -> bytes:
    import zlib

    body = bytearray(struct.pack("<I", len(names)))
    for name in names:
        raw = name.encode()
        body += struct.pack("<H", len(raw)) + raw
    names_len = len(body)
    body += entries
    return bytes(body) + _TRAILER.pack(start, len(entries) // ENTRY_SIZE, names_len, zlib.crc32(body), FOOTER_MAGIC)


def _read_footer(data: bytes) -> tuple[list[str], bytes] | None:
    """(names, entries) of a sealed chunk, or None when it has no whole footer."""
    import zlib

    if len(data) < TRAILER_SIZE:
        return None
    start, count, names_len, crc, magic = _TRAILER.unpack_from(data, len(data) - TRAILER_SIZE)
    body = data[start : len(data) - TRAILER_SIZE]
    if magic != FOOTER_MAGIC or start > len(data) or len(body) != names_len + count * ENTRY_SIZE:
        return None
    if zlib.crc32(body) != crc:
        return None
    (n,) = struct.unpack_from("<I", body, 0)
    names, at = [], 4
    for _ in range(n):
        (size,) = struct.unpack_from("<H", body, at)
        names.append(body[at + 2 : at + 2 + size].decode())
        at += 2 + size
    return names, body[names_len:]
