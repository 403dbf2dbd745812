"""Real H.264 for egress tests: an ffmpeg clip split into access units, and a paced feeder that publishes
them into a hub like a camera would (rising pts, real-time pace, loops forever).

The feeder is the only thing to swap when a test should run against a real RTSP camera instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from mediaserver.hub import Hub

FPS = 25
FRAME_TICKS = 90000 // FPS


@dataclass(frozen=True, slots=True)
class Unit:
    """Same shape as core_ext.depacketize.AccessUnit."""

    data: bytes
    pts: int
    keyframe: bool
    codec: str = "h264"


def make_clip(path: Path, seconds: int = 8, gop: int = 100, codec: str = "h264", size: str = "640x360") -> Path:
    """25 fps testsrc (640x360 unless `size`), single slice, no B-frames; parameter sets before every keyframe."""
    if codec == "h264":
        enc = ["-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-bf", "0"]
        enc += ["-x264-params", f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1:slices=1"]
        fmt = "h264"
    else:
        enc = ["-c:v", "libx265", "-preset", "ultrafast"]
        enc += [
            "-x265-params",
            f"log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1",
        ]
        fmt = "hevc"
    source = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={FPS}", "-t", str(seconds)]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *source, "-pix_fmt", "yuv420p", *enc, "-b:v", "800k", "-f", fmt, str(path)],
        check=True,
        timeout=300,
    )
    return path


def read_units(path: Path, codec: str = "h264") -> list[Unit]:
    """Split an Annex-B elementary stream into access units with 90 kHz pts."""
    parser = av.CodecContext.create("hevc" if codec == "h265" else "h264", "r")
    packets = [*parser.parse(path.read_bytes()), *parser.parse(b"")]
    return [Unit(bytes(p), i * FRAME_TICKS, p.is_keyframe, codec) for i, p in enumerate(packets)]


def looped(units: list[Unit], loop: int) -> list[Unit]:
    """The clip's units as the `loop`-th pass of an endless camera: pts keep rising."""
    offset = loop * len(units) * FRAME_TICKS
    return [Unit(u.data, u.pts + offset, u.keyframe, u.codec) for u in units]


async def feed(hub: Hub, units: list[Unit], start: int = 0, fps: float = FPS) -> None:
    """Publish units into `hub` like a live camera, looping forever (cancel to stop). The camera has already
    sent units[:start] (published at once, so a viewer joining now lands mid-GOP); the rest are paced."""
    for unit in units[:start]:
        hub.publish(unit)
    t0 = time.monotonic()
    n = 0
    for loop in itertools.count():
        for unit in looped(units, loop)[start if loop == 0 else 0 :]:
            hub.publish(unit)
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / fps - time.monotonic()))


def decode_all(units: list[Unit], codec: str = "h264") -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("hevc" if codec == "h265" else "h264", "r")
    frames: list[av.VideoFrame] = []
    for unit in units:
        frames += decoder.decode(av.Packet(unit.data))
    return frames


def psnr(a: av.VideoFrame, b: av.VideoFrame) -> float:
    """Luma PSNR in dB."""
    ya = a.to_ndarray(format="gray").astype(np.float64)
    yb = b.to_ndarray(format="gray").astype(np.float64)
    mse = float(np.mean((ya - yb) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


@contextlib.asynccontextmanager
async def clip_camera(camera_id: str, units: list[Unit], start: int = 0) -> AsyncIterator[Hub]:
    """A hub fed from the clip like a live camera (see `feed`), stopped on exit."""
    hub = Hub(camera_id, codec=units[0].codec)
    task = asyncio.create_task(feed(hub, units, start))
    try:
        yield hub
    finally:
        task.cancel()
        hub.close()


@contextlib.asynccontextmanager
async def rtsp_camera(camera_id: str, url: str, timeout: float = 10.0) -> AsyncIterator[Hub]:
    """A hub fed by the real ingest (mediaserver.worker.Worker) from an RTSP camera; yields once the hub has
    a keyframe cached, stops the worker on exit."""
    from mediaserver.registry import Camera
    from mediaserver.worker import Worker

    worker = Worker()
    worker.add_camera(Camera(id=camera_id, name=camera_id, district="", lat=0.0, lon=0.0, url=url))
    hub = worker.hubs[camera_id]
    try:
        deadline = time.monotonic() + timeout
        while not hub.gop():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no keyframe from {url} within {timeout} s")
            await asyncio.sleep(0.05)
        yield hub
    finally:
        await worker.stop()
