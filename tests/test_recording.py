"""The recording ring against a real camera and real processes: read-back, rotation, kill -9, torn tail, full disk."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mediaserver.hub import Unit
from mediaserver.recording import RecordingError, RecordingRing, RecordSettings, check_capacity
from mediaserver.registry import make_camera
from mediaserver.rtsp.client import Timeouts
from mediaserver.worker import Worker, WorkerSettings

FAST = Timeouts(connect=2.0, response=1.0, stall=1.0, first_keyframe=2.0)


async def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def _worker(tmp_path: Path, idle_read: float = 0.0) -> Worker:
    settings = WorkerSettings(timeouts=FAST, record_dir=str(tmp_path), idle_read_interval=idle_read)
    return Worker(settings)


def _camera(url: str) -> object:
    return make_camera("cam-1", "Cam", "Jung-gu", 37.5, 127.0, url)


async def test_watched_camera_reads_back_byte_identical_by_wall_time(h264_camera: str, tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    try:
        worker.add_camera(_camera(h264_camera))  # type: ignore[arg-type]
        hub = worker.hubs["cam-1"]
        sub = hub.subscribe(maxsize=10_000)  # watched: every unit goes through Hub.publish
        seen: list[Unit] = []
        async with asyncio.timeout(10):
            while len(seen) < 60:
                unit = await sub.get()
                assert unit is not None
                seen.append(unit)
        ring = worker.recording
        assert ring is not None
        await wait_for(lambda: ring.ring.count(ring.camera("cam-1")) >= 60, 3.0)  # written within ~1 s
        span = ring.range("cam-1")
        assert span is not None and span[0] <= span[1] <= time.time()
        frames = ring.frames("cam-1", span[0])
        assert frames[0].keyframe
        recorded = {f.pts: f.data for f in frames}
        assert all(recorded[u.pts] == u.data for u in seen)  # byte-identical, every unit a viewer got
        walls = [f.wall_ns for f in frames]
        assert walls == sorted(walls)
        # by wall time: a start inside the stream gives the keyframe at or before it, then everything after
        middle = frames[len(frames) // 2]
        later = ring.frames("cam-1", middle.wall_ns / 1e9)
        assert later[0].keyframe and later[0].wall_ns <= middle.wall_ns
        assert [f.pts for f in later] == [f.pts for f in frames if f.wall_ns >= later[0].wall_ns]
    finally:
        await worker.stop()


async def test_unwatched_camera_is_recorded_from_the_c_path(h264_camera: str, tmp_path: Path) -> None:
    worker = _worker(tmp_path, idle_read=0.2)  # batched reads: units land in the cache (and the ring) in C
    try:
        worker.add_camera(_camera(h264_camera))  # type: ignore[arg-type]
        hub = worker.hubs["cam-1"]
        ring = worker.recording
        assert ring is not None
        await wait_for(lambda: hub.units >= 60, 10.0)
        assert hub.cache.direct  # nobody watched: the receiver fed the cache itself
        gop = hub.gop()  # the cached units are the very objects the C path handed the recorder
        await wait_for(lambda: ring.stats()["index_entries"] >= hub.units - ring.ring.skipped - 10, 3.0)
        span = ring.range("cam-1")
        assert span is not None and ring.frames("cam-1", span[0] - 1) == []  # before the ring: nothing
        frames = {f.pts: f.data for f in ring.frames("cam-1", span[0])}
        assert gop and all(frames[u.pts] == u.data for u in gop)
        assert ring.ring.units >= hub.units - ring.ring.skipped - 1
    finally:
        await worker.stop()


def _fill(ring: RecordingRing, camera: str, seconds: float, fps: int = 50, size: int = 2000) -> None:
    slot = ring.camera(camera)
    for i in range(int(seconds * fps)):
        ring.ring.append(slot, i.to_bytes(4, "big") * (size // 4), i * 1800, i % 25 == 0)
        time.sleep(1 / fps)


def test_rotation_deletes_whole_chunks_oldest_first(tmp_path: Path) -> None:
    ring = RecordingRing(RecordSettings(str(tmp_path), window_s=1.0, flush_s=0.1, chunk_s=0.3))
    try:
        _fill(ring, "cam", 3.0)
        time.sleep(0.3)
        ids = sorted(int(p.stem) for p in ring.path.glob("*.chunk"))
        assert ring.deleted_chunks >= 4 and ids[0] == ring.deleted_chunks  # the oldest went first, whole
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        span = ring.range("cam")
        assert span is not None and span[0] >= time.time() - 1.0 - 0.3 - 0.5  # window + one chunk + slack
        assert ring.frames("cam", span[0])[0].keyframe
    finally:
        ring.close()


def test_the_byte_cap_deletes_oldest_chunks(tmp_path: Path) -> None:
    cap = 3 << 20
    ring = RecordingRing(RecordSettings(str(tmp_path), window_s=60, max_bytes=cap, flush_s=0.1, chunk_s=60))
    try:
        _fill(ring, "cam", 2.0, fps=100, size=20_000)  # ~4 MB
        time.sleep(0.3)
        stats = ring.stats()
        assert stats["deleted_chunks"] >= 1 and stats["disk_bytes"] <= cap
        assert stats["disk_bytes"] == sum(p.stat().st_size for p in ring.path.glob("*.chunk"))
    finally:
        ring.close()


WRITER = """
import sys, time
from mediaserver.recording import RecordingRing, RecordSettings
ring = RecordingRing(RecordSettings(sys.argv[1], window_s=60, chunk_s=float(sys.argv[2])))
slot = ring.camera("cam")
print("READY", flush=True)
i = 0
while True:
    ring.ring.append(slot, i.to_bytes(4, "big") * 500, i * 3600, i % 25 == 0)
    i += 1
    time.sleep(0.02)
"""


def _killed_writer(path: Path, seconds: float, chunk_s: float = 1.0) -> float:
    """Run a process appending 50 units/s to a ring for `seconds`, kill -9 it; the wall time of the kill."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(chunk_s)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"READY"
        time.sleep(seconds)
        killed = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    return killed


def test_kill_9_loses_at_most_the_last_second(tmp_path: Path) -> None:
    killed = _killed_writer(tmp_path, 3.5)
    ring = RecordingRing(RecordSettings(str(tmp_path), window_s=60))
    try:
        span = ring.range("cam")
        assert span is not None and span[1] >= killed - 1.1
        frames = ring.frames("cam", span[0])
        assert len(frames) >= 50 * 2.4 and frames[0].keyframe
        n = [int.from_bytes(f.data[:4], "big") for f in frames]
        assert n == list(range(n[0], n[0] + len(n)))  # nothing missing before the lost tail
        assert all(f.data == f.data[:4] * 500 for f in frames)
        assert ring.stats()["chunks"] >= 4  # sealed ones by footer, the torn one by scan, and a new one
    finally:
        ring.close()


def test_a_torn_last_record_is_cut(tmp_path: Path) -> None:
    _killed_writer(tmp_path, 1.5, chunk_s=60)
    (last,) = (tmp_path / "w0").glob("*.chunk")  # one chunk, never sealed
    size = last.stat().st_size
    with open(last, "r+b") as f:
        f.truncate(size - 700)  # the last record (2,000 data bytes) loses its tail
    ring = RecordingRing(RecordSettings(str(tmp_path), window_s=60))
    try:
        record = 40 + 3 + 2000
        assert (size - 700) // record * record == (size // record - 1) * record  # it was whole records before
        span = ring.range("cam")
        assert span is not None
        frames = ring.frames("cam", span[0])
        assert len(frames) == size // record - 1
        assert frames[-1].data == frames[-1].data[:4] * 500
        assert last.stat().st_size > size - 700  # cut to whole records, then sealed with a footer
    finally:
        ring.close()
    again = RecordingRing(RecordSettings(str(tmp_path), window_s=60))  # the sealed chunk reads by its footer
    try:
        span = again.range("cam")
        assert span is not None and len(again.frames("cam", span[0])) == size // record - 1
    finally:
        again.close()


FULL_DISK = """
import asyncio, json, resource, sys, time
from mediaserver.metrics import render, sample_worker
from mediaserver.registry import make_camera
from mediaserver.rtsp.client import Timeouts
from mediaserver.worker import Worker, WorkerSettings

resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))  # a write past it: EFBIG

async def main():
    timeouts = Timeouts(connect=2.0, response=1.0, stall=1.0, first_keyframe=2.0)
    worker = Worker(WorkerSettings(timeouts=timeouts, record_dir=sys.argv[1]))
    worker.add_camera(make_camera("cam-1", "Cam", "Jung-gu", 37.5, 127.0, sys.argv[2]))
    hub = worker.hubs["cam-1"]
    deadline = time.monotonic() + 15
    while worker.recording.error is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    at_stop = hub.units
    await asyncio.sleep(1.5)
    text = render([sample_worker(worker, "w0")])
    up = next(line for line in text.splitlines() if line.startswith("goldentime_recording_up"))
    print(json.dumps({"state": worker.recording.state, "at_stop": at_stop, "after": hub.units, "up": up,
                      "ingest": worker.ingests["cam-1"].state.value, **worker.recording.stats()}))
    await worker.stop()

asyncio.run(main())
"""


def test_a_write_error_stops_recording_not_ingest(h264_camera: str, tmp_path: Path) -> None:
    """A small file-size limit (RLIMIT_FSIZE in the worker's process) makes the ring's write fail with EFBIG, as a
    full disk fails with ENOSPC: the same path (write_taken returns the errno)."""
    limit = 300_000
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path), h264_camera, str(limit)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result["state"].startswith("stopped: EFBIG"), result
    assert result["up"] == 'goldentime_recording_up{worker="w0"} 0'  # the metric an alert fires on
    assert b"recording stopped" in out.stderr
    assert result["after"] > result["at_stop"] + 20 and result["ingest"] == "streaming"  # ~1.5 s more video
    assert result["dropped"] > 0 and result["bytes_written"] <= limit
    assert all(p.stat().st_size <= limit for p in tmp_path.rglob("*.chunk"))


def test_a_ring_is_written_by_one_process(tmp_path: Path) -> None:
    ring = RecordingRing(RecordSettings(str(tmp_path)))
    try:
        with pytest.raises(RecordingError, match="another process"):
            RecordingRing(RecordSettings(str(tmp_path)))
    finally:
        ring.close()


def test_start_up_refuses_a_cap_or_disk_that_cannot_hold_the_window(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="--record-seconds 120 needs"):
        check_capacity(str(tmp_path), 10 << 20, 120, 100)  # 100 cameras x 120 s x 500 kbps = 750 MB
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(RecordingError, match="but the disk has"):
        check_capacity(str(tmp_path), 0, 120, free // 7_500_000 + 10)
    check_capacity(str(tmp_path), 1 << 30, 120, 100)
