"""Opens a viewer on the present instead of the past.

The hub keeps the GOP since the camera's last keyframe. Replaying it shows a picture at once, but one up to
a GOP old, which the browser then fast-forwards. Waiting for the next keyframe shows the present, but up to
a GOP later. The bridge does both: it decodes the cached GOP on the server, encodes the newest frame as an
IDR and sends it at once, then keeps transcoding each new camera frame until the camera's next keyframe,
where its viewers switch to plain passthrough starting with that real keyframe.

One bridge per camera and GOP, shared by every viewer that joins during that GOP (a later joiner forces the
next bridge frame to be an IDR). All units keep the camera's own pts (90 kHz), so the switch is seamless.
For a codec the browser can't decode (H.265), or a profile other than the camera's own (transcode.py: e.g.
`low`, 640x360), the bridge simply never switches: it is the transcode, one per (camera, profile).

`ViewerFeed` is what one viewer sends: bridge frames first where needed, then its own hub subscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
from av.video.frame import PictureType, VideoFrame

from mediaserver.hub import Hub, Subscription, Unit
from mediaserver.transcode import MAIN, Profile, codec_name

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
MIN_REFRESH_INTERVAL = 1.0  # s between keyframes served to one viewer on its request (PLI storms)
VIEW_QUEUE = 32  # bridge frames buffered per viewer before it is treated as slow
BRIDGE_QUEUE = 256  # units buffered for the bridge while it decodes
# One thread per decoder and encoder: a worker runs one process per core, and single-threaded codecs gave the
# most frames per CPU-second (benchmarks/transcode_bench.py: 720p H.265 -> H.264 at ~3.7 ms a frame, so even
# 1080p keeps 25 fps on one core). 0 lets libavcodec/x264 use every core instead.
TRANSCODE_THREADS = 1


@dataclass(frozen=True, slots=True)
class Encoded:
    """An H.264 access unit the bridge made (Annex-B, the source frame's pts)."""

    data: bytes
    pts: int
    keyframe: bool


def _estimate_rate(gop: Sequence[Unit]) -> tuple[int, Fraction]:
    """Bit rate and frame rate of the camera from its cached GOP (defaults when too short to tell)."""
    if len(gop) < 2:
        return 1_000_000, Fraction(25)
    span = (gop[-1].pts - gop[0].pts) / 90000
    fps = Fraction(round((len(gop) - 1) / span)) if span > 0 else Fraction(25)
    bits = 8 * sum(len(u.data) for u in gop) / span if span > 0 else 1_000_000
    return int(min(max(bits, 300_000), 8_000_000)), max(fps, Fraction(1))


class Transcoder:
    """A decoder for the camera's codec and an H.264 encoder for a profile (size, bit rate). Blocking: call
    from one thread at a time. `cpu_s` adds up the thread CPU time spent in it (benchmarks, metrics)."""

    def __init__(
        self, codec: str, bit_rate: int, fps: Fraction, profile: Profile = MAIN, threads: int = TRANSCODE_THREADS
    ) -> None:
        self._decoder: av.VideoCodecContext = av.CodecContext.create(codec_name(codec), "r")  # type: ignore[assignment]
        # No frame threading: each unit in gives its frame out at once (cameras send no B-frames).
        self._decoder.thread_type = "SLICE"
        self._decoder.thread_count = threads
        self._threads = threads
        self._decoder.flags |= av.codec.context.Flags.low_delay
        self._profile = profile
        self._bit_rate = profile.bit_rate or bit_rate
        self._fps = fps
        self._encoder: av.VideoCodecContext | None = None
        self.cpu_s = 0.0

    def decode(self, units: Sequence[Unit]) -> VideoFrame | None:
        """Decode all units; the newest picture (its pts is the source pts), or None."""
        started = time.thread_time()
        try:
            return self._decode(units)
        finally:
            self.cpu_s += time.thread_time() - started

    def _decode(self, units: Sequence[Unit]) -> VideoFrame | None:
        newest = None
        for unit in units:
            packet = av.Packet(unit.data)
            packet.pts = unit.pts
            packet.time_base = TIME_BASE
            try:
                for frame in self._decoder.decode(packet):
                    newest = frame
            except av.error.FFmpegError as exc:  # a damaged unit: the next ones may still decode
                log.debug("bridge decode error at pts %d: %s", unit.pts, exc)
        return newest

    def encode(self, frame: VideoFrame, pts: int, idr: bool) -> tuple[bytes, bool]:
        """Encode one frame as H.264 (Annex-B) at the profile's size; `idr` forces an IDR with SPS/PPS."""
        started = time.thread_time()
        try:
            return self._encode(frame, pts, idr)
        finally:
            self.cpu_s += time.thread_time() - started

    def _encode(self, frame: VideoFrame, pts: int, idr: bool) -> tuple[bytes, bool]:
        width, height = self._profile.size(frame.width, frame.height)
        if frame.format.name != "yuv420p" or (width, height) != (frame.width, frame.height):
            frame = frame.reformat(width=width, height=height, format="yuv420p")
        encoder = self._encoder_for(frame)
        frame.pts = pts
        frame.time_base = TIME_BASE
        frame.pict_type = PictureType.I if idr else PictureType.NONE
        packets = encoder.encode(frame)
        return b"".join(bytes(p) for p in packets), any(p.is_keyframe for p in packets)

    def _encoder_for(self, frame: VideoFrame) -> av.VideoCodecContext:
        enc = self._encoder
        if enc is not None and (enc.width, enc.height) == (frame.width, frame.height):
            return enc
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height = frame.width, frame.height
        enc.pix_fmt = "yuv420p"
        enc.time_base = TIME_BASE
        enc.framerate = self._fps
        enc.bit_rate = self._bit_rate
        enc.gop_size = 1 << 20  # IDRs only when asked for: the camera's own keyframes end the bridge
        # Baseline: Chromium's offer lists 42e01f; zerolatency: one frame in, one frame out, no lookahead.
        enc.profile = "Baseline"
        enc.thread_count = self._threads
        enc.options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1", "x264-params": "scenecut=0"}
        self._encoder = enc
        return enc


class BridgeView:
    """One viewer's place on a bridge: the bridge frames from its first IDR on; None = bridge over.

    An inactive view (a viewer still connecting) receives nothing but keeps the bridge decoding, so that
    once the viewer is ready only one frame has to be encoded."""

    def __init__(self, bridge: Bridge, active: bool) -> None:
        self.bridge = bridge
        self.active = active
        self._queue: asyncio.Queue[Encoded | None] = asyncio.Queue(VIEW_QUEUE)
        self._started = False
        self.overflows = 0  # times this viewer could not keep up and was restarted on an IDR

    def activate(self) -> None:
        """Start receiving, from an IDR of the next camera frame."""
        self.active = True
        self._started = False
        self._drain()
        self.bridge.request_idr()

    def _put(self, enc: Encoded) -> None:
        if not self.active or (not self._started and not enc.keyframe):
            return
        self._started = True
        try:
            self._queue.put_nowait(enc)
        except asyncio.QueueFull:  # slow viewer: drop what it has, restart it on the next IDR
            self.overflows += 1
            self._drain()
            self._started = False
            self.bridge.request_idr()

    def _end(self) -> None:
        self._drain()
        self._queue.put_nowait(None)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def get(self) -> Encoded | None:
        return await self._queue.get()

    def request_idr(self) -> None:
        self.bridge.request_idr()

    def leave(self) -> None:
        self.bridge.leave(self)


class Bridge:
    """The shared transcode of one camera from a cached GOP up to the camera's next keyframe."""

    def __init__(self, hub: Hub, profile: Profile = MAIN, on_done: Callable[[Bridge], None] | None = None) -> None:
        self.hub = hub
        self.profile = profile
        self._on_done = on_done
        # False: transcode forever (a codec the browser can't decode, or another size/rate: transcode.py)
        self.passthrough = profile.passthrough(hub.codec)
        self._snapshot: list[Unit] = hub.gop()
        self.key_pts = self._snapshot[0].pts if self._snapshot else None
        # Snapshot and subscription in the same tick: no unit is missed or seen twice.
        self._sub: Subscription = hub.subscribe(BRIDGE_QUEUE)
        if not self._snapshot:
            self._sub.wait_for_keyframe()
        self._views: set[BridgeView] = set()
        self._force_idr = True
        self.done = False
        self.frames = 0  # frames encoded
        self.decoded = 0  # units decoded
        self.started_at = time.monotonic()
        rate, fps = _estimate_rate(self._snapshot)
        self.transcoder = Transcoder(hub.codec, rate, fps, profile)
        name = f"bridge-{hub.camera_id}-{profile.name}"
        self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    def join(self, active: bool = True) -> BridgeView:
        view = BridgeView(self, active)
        self._views.add(view)
        if active:
            self._force_idr = True
        return view

    def leave(self, view: BridgeView) -> None:
        self._views.discard(view)
        if not self._views:
            self.stop()

    def request_idr(self) -> None:
        self._force_idr = True

    @property
    def viewers(self) -> int:
        return len(self._views)

    def stop(self) -> None:
        if not self.done:
            self.done = True
            self._task.cancel()
            self._finish()

    def _finish(self) -> None:
        self.done = True
        self._sub.close()
        for view in tuple(self._views):
            view._end()
        self._views.clear()
        if self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            on_done(self)

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bridge of %s failed; its viewers resume at the next keyframe", self.hub.camera_id)
        finally:
            self._finish()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        pending, self._snapshot = self._snapshot, []
        while self._views:
            fresh = self._sub.drain()  # all the camera sent meanwhile: decode all, encode the newest
            if self.passthrough and any(u.keyframe for u in fresh):
                log.debug("bridge %s: camera keyframe, %d viewers switch to passthrough", self.hub.camera_id,
                          len(self._views))  # fmt: skip
                return
            batch = pending + fresh
            pending = []
            if not batch:
                unit = await self._sub.get()
                if unit is None:
                    return
                pending = [unit]
                if self.passthrough and unit.keyframe:
                    return
                continue
            frame = await loop.run_in_executor(None, self.transcoder.decode, batch)
            self.decoded += len(batch)
            if frame is not None and any(v.active for v in self._views):  # else only keep decoding
                await self._encode(loop, frame, batch[-1].pts if frame.pts is None else frame.pts)

    async def _encode(self, loop: asyncio.AbstractEventLoop, frame: VideoFrame, pts: int) -> None:
        idr, self._force_idr = self._force_idr, False
        data, keyframe = await loop.run_in_executor(None, self.transcoder.encode, frame, pts, idr)
        if not data:
            return
        self.frames += 1
        enc = Encoded(data, pts, keyframe)
        for view in tuple(self._views):
            view._put(enc)


class BridgePool:
    """The bridges of one worker: at most one current bridge per camera and profile (the transcodes)."""

    def __init__(self) -> None:
        self._bridges: dict[tuple[str, str], Bridge] = {}

    def join(self, hub: Hub, active: bool = True, profile: Profile = MAIN) -> BridgeView:
        """A place on the camera's current bridge for this profile, started if needed."""
        key = (hub.camera_id, profile.name)
        bridge = self._bridges.get(key)
        if bridge is None or not self.current(bridge, hub):
            bridge = Bridge(hub, profile, self._forget)
            self._bridges[key] = bridge
        return bridge.join(active)

    @staticmethod
    def current(bridge: Bridge, hub: Hub) -> bool:
        """A passthrough bridge serves joiners only during its own GOP: they switch at the next keyframe."""
        if bridge.done or bridge.hub is not hub:
            return False
        if not bridge.passthrough:
            return True
        gop = hub.gop()
        return bool(gop) and gop[0].pts == bridge.key_pts

    def _forget(self, bridge: Bridge) -> None:
        """A finished bridge lets go of its decoder and encoder at once."""
        key = (bridge.hub.camera_id, bridge.profile.name)
        if self._bridges.get(key) is bridge:
            del self._bridges[key]

    @property
    def active(self) -> int:
        return len(self._bridges)

    def bridges(self) -> list[Bridge]:
        return list(self._bridges.values())

    def close(self) -> None:
        for bridge in list(self._bridges.values()):
            bridge.stop()
        self._bridges.clear()


# How a viewer's stream starts: "live" opens on the newest frame through the bridge (the default);
# "gop" replays the cached GOP from its keyframe (fast, but shows the past first, then fast-forwards);
# "keyframe" waits for the camera's next keyframe (what most servers do). The last two exist so the
# benchmarks can compare all three on the same camera in one run.
StartPolicy = Literal["live", "gop", "keyframe"]
START_POLICIES: tuple[StartPolicy, ...] = ("live", "gop", "keyframe")


class ViewerFeed:
    """The units one viewer sends, starting at the present.

    The start is decided when the sender first asks (the viewer is connected), not at offer time:
    - newest cached unit is a keyframe, or nothing cached: passthrough (from that keyframe / the next one);
    - mid-GOP: bridge frames (an IDR of the newest frame first), then passthrough from the next keyframe;
    - H.265 camera, or a profile other than the camera's own (transcode.py): bridge frames only.
    While the viewer connects, a mid-GOP bridge is already decoding ("warm"), so only one frame is left to
    encode when it is ready, and nothing that went stale meanwhile is sent.
    """

    def __init__(self, pool: BridgePool, hub: Hub, start: StartPolicy = "live", profile: Profile = MAIN) -> None:
        self._pool = pool
        self._hub = hub
        self._profile = profile
        self._transcode = not profile.passthrough(hub.codec)
        self._policy = start
        self._sub: Subscription | None = None
        self._view: BridgeView | None = None
        self._replay: list[Unit] = []
        self._active = False
        self.opened_at = time.monotonic()
        self.active_at: float | None = None  # when the sender first asked (the viewer is connected)
        self.first_at: float | None = None  # when the first unit was handed to the sender
        self.first_age: float | None = None  # how far behind the live edge the first picture was, s
        self.sent = 0
        self.bridged = 0
        self.keyframes = 0
        self._past_overflows = 0
        self._last_key_at = 0.0
        self.handed_over = False  # the camera's shared fan-out sends for this viewer (caught_up/hand_over)
        if self._transcode or (start == "live" and len(hub.gop()) >= 2):
            self._view = pool.join(hub, active=False, profile=profile)

    def _activate(self) -> None:
        self._active = True
        self.active_at = time.monotonic()
        warm, self._view = self._view, None
        if self._transcode:
            self._view = warm
        elif warm is not None and self._pool.current(warm.bridge, self._hub):
            self._sub = self._hub.subscribe()
            self._sub.wait_for_keyframe()  # passthrough resumes exactly at the bridge's switch keyframe
            self._view = warm
        else:
            if warm is not None:
                warm.leave()
            self._start()
        if self._view is not None:
            self._view.activate()

    def _start(self) -> None:
        gop = self._hub.gop()
        self._sub = self._hub.subscribe()  # with the snapshot in the same tick: nothing missed or doubled
        if not gop or self._policy == "keyframe":
            self._sub.wait_for_keyframe()
        elif len(gop) == 1 or self._policy == "gop":
            self._replay = gop  # the newest unit is a keyframe: nothing to bridge
        else:
            self._view = self._pool.join(self._hub, profile=self._profile)
            self._sub.wait_for_keyframe()

    @property
    def bridging(self) -> bool:
        return self._view is not None

    @property
    def overflows(self) -> int:
        """Times this viewer fell behind (its hub queue or bridge queue overflowed)."""
        sub = self._sub.overflows if self._sub is not None else 0
        view = self._view.overflows if self._view is not None else 0
        return self._past_overflows + sub + view

    def _leave_view(self) -> None:
        if self._view is not None:
            self._past_overflows += self._view.overflows
            self._view.leave()
            self._view = None

    async def next(self) -> Unit | Encoded | None:
        """The next unit to send, or None when the camera is gone."""
        while True:
            unit = await self._next_raw()
            if unit is None:
                return None
            if self.sent or unit.keyframe:  # never start a viewer on a non-keyframe
                return self._account(unit)

    async def _next_raw(self) -> Unit | Encoded | None:
        if not self._active:
            self._activate()
        if self._replay:
            return self._replay.pop(0)
        while self._view is not None:
            enc = await self._view.get()
            if enc is not None:
                self.bridged += 1
                return enc
            self._leave_view()  # bridge over: continue on the subscription, which starts at its keyframe
        return None if self._sub is None else await self._sub.get()

    def _account(self, unit: Unit | Encoded) -> Unit | Encoded:
        now = time.monotonic()
        self.sent += 1
        if unit.keyframe:
            self.keyframes += 1
            self._last_key_at = now
        if self.first_at is None:
            self.first_at = now
            self.first_age = self._age(unit.pts, now)
            log.info(
                "viewer of %s: first picture %.0f ms after the viewer connected, %.0f ms behind live (%s)",
                self._hub.camera_id, 1000 * (now - (self.active_at or now)), 1000 * self.first_age,
                "bridge IDR" if isinstance(unit, Encoded) else "camera keyframe",
            )  # fmt: skip
        return unit

    def _age(self, pts: int, now: float) -> float:
        """Wall time since the camera sent the frame with this pts (estimated from the live edge)."""
        gop = self._hub.gop()
        edge = gop[-1].pts if gop else pts
        return max(0.0, now - self._hub.last_unit_at + (edge - pts) / 90000)

    @property
    def hub(self) -> Hub:
        return self._hub

    def caught_up(self) -> bool:
        """On plain passthrough and nothing queued: from the hub's next unit on, this viewer sends exactly what
        every other such viewer sends, so the caller may hand it to the camera's shared fan-out."""
        sub = self._sub
        return self._view is None and not self._replay and sub is not None and self.sent > 0 and sub.caught_up

    def hand_over(self) -> None:
        """The shared fan-out sends from now on (call in the same tick as `caught_up()`): drop the subscription."""
        if self._sub is not None:
            self._past_overflows += self._sub.overflows
            self._sub.close()
            self._sub = None
        self.handed_over = True

    def refresh(self) -> bool:
        """The viewer lost the picture (PLI/FIR): serve it an IDR of the newest frame from the cache.
        A handed-over viewer comes back to `next()` (its caller leaves the fan-out when this returns True)."""
        now = time.monotonic()
        if now - self._last_key_at < MIN_REFRESH_INTERVAL:
            return False
        if self.handed_over:
            self._last_key_at = now
            self.handed_over = False
            self._sub = self._hub.subscribe()
            gop = self._hub.gop()
            if len(gop) >= 2:
                self._view = self._pool.join(self._hub, profile=self._profile)
                self._sub.wait_for_keyframe()
            elif gop:
                self._replay = gop  # the newest unit is a keyframe: resend it
            else:
                self._sub.wait_for_keyframe()
            return True
        self._last_key_at = now
        if self._view is not None:
            self._view.request_idr()
            return True
        if self._sub is None or not self._active or len(self._hub.gop()) < 2:
            return False  # a keyframe was just sent or is the next thing to come
        self._replay = []
        self._view = self._pool.join(self._hub, profile=self._profile)
        self._sub.wait_for_keyframe()
        return True

    def close(self) -> None:
        self._leave_view()
        if self._sub is not None:
            self._sub.close()
