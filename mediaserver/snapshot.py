"""JPEG snapshots of a camera's newest frame, decoded from the hub's GOP cache (no extra camera session).

A map or an incident list may show dozens of thumbnails refreshed every few seconds by every operator: a
snapshot is cached for `ttl_s` per (camera, width), and concurrent requests for the same one share a single
decode (the first request's future), so a burst costs one decode per camera and size per second at most.
Widths are rounded up to a few fixed ones (`WIDTHS`, else the camera's native size): asking for 30 distinct
widths costs at most `len(WIDTHS) + 1` decodes, not 30, in the thread pool that new viewers need too.
Decoding and JPEG encoding run in the default executor, off the event loop that sends everyone's video.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from fractions import Fraction

import av
from av.video.frame import VideoFrame

from mediaserver.hub import Hub, Unit
from mediaserver.transcode import codec_name

TTL_S = 1.0
MIN_WIDTH, MAX_WIDTH = 16, 3840
WIDTHS = (160, 320, 640, 1280)  # what thumbnails, tiles and a detail view ask for; wider: the native picture
JPEG_QSCALE = 4  # MJPEG quantiser: 2 (best) .. 31; 4 is visually clean at a third of q=2's size
_FF_QP2LAMBDA = 118


class NoPicture(LookupError):
    """The camera has no keyframe cached yet (just connected, or reconnecting)."""


def newest_frame(codec: str, units: Sequence[Unit]) -> VideoFrame:
    """Decode the GOP (keyframe first) and return its newest picture. Blocking."""
    decoder = av.CodecContext.create(codec_name(codec), "r")
    newest: VideoFrame | None = None
    for unit in units:
        try:
            for frame in decoder.decode(av.Packet(unit.data)):  # type: ignore[attr-defined]
                newest = frame
        except av.error.FFmpegError:  # a damaged unit: keep the last good picture
            continue
    if newest is None:
        raise NoPicture("nothing decodable in the cache")
    return newest


def encode_jpeg(frame: VideoFrame, width: int | None = None) -> bytes:
    """The frame as a baseline JPEG, scaled down to `width` (aspect kept, even height, never up). Blocking."""
    w = min(width or frame.width, frame.width)
    h = max(2, round(frame.height * w / frame.width / 2) * 2)
    picture = frame.reformat(width=w, height=h, format="yuvj420p")
    picture.pts = 0
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = w, h
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.flags |= av.codec.context.Flags.qscale
    encoder.global_quality = JPEG_QSCALE * _FF_QP2LAMBDA
    packets = [*encoder.encode(picture), *encoder.encode(None)]
    return b"".join(bytes(p) for p in packets)


def snap_width(width: int | None) -> int | None:
    """The fixed width a request is served at: the smallest of WIDTHS at least as wide, else native (None)."""
    if width is None:
        return None
    return next((w for w in WIDTHS if w >= width), None)


def render(codec: str, units: Sequence[Unit], width: int | None) -> bytes:
    return encode_jpeg(newest_frame(codec, units), width)


class SnapshotCache:
    """Snapshots per (camera, width), fresh for `ttl_s`; one decode per key however many ask at once."""

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, int | None], tuple[float, asyncio.Future[bytes]]] = {}
        self.rendered = 0  # decodes (each with its one JPEG encode) done: tests, metrics

    async def get(self, hub: Hub, width: int | None = None) -> bytes:
        """The newest picture of the camera as JPEG, `width` rounded up (snap_width). Raises NoPicture."""
        width = snap_width(width)
        key = (hub.camera_id, width)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self.ttl_s or (entry[1].done() and entry[1].exception()):
            self._prune(now)
            entry = (now, asyncio.get_running_loop().create_future())
            self._entries[key] = entry
            self._render(hub, width, entry[1])
        return await asyncio.shield(entry[1])

    def _render(self, hub: Hub, width: int | None, future: asyncio.Future[bytes]) -> None:
        gop = hub.gop()  # snapshot of the cache now, on the loop: the hub may move on meanwhile
        if not gop:
            future.set_exception(NoPicture(f"no picture from {hub.camera_id} yet"))
            return
        self.rendered += 1
        work = asyncio.get_running_loop().run_in_executor(None, render, hub.codec, gop, width)
        asyncio.ensure_future(work).add_done_callback(lambda done: _settle(future, done))

    def _prune(self, now: float) -> None:
        """Forget expired entries so the cache holds only what was asked for in the last `ttl_s`."""
        for key in [k for k, (at, _) in self._entries.items() if now - at > self.ttl_s]:
            del self._entries[key]


def _settle(future: asyncio.Future[bytes], done: asyncio.Future[bytes]) -> None:
    if future.done():
        return
    if done.cancelled():
        future.cancel()
    elif (exc := done.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(done.result())
