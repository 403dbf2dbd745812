"""Per-camera hub: the GOP since the last keyframe and the subscribers that receive live access units.

A camera is read once, however many viewers it has. The hub never waits for a subscriber: each one has a
small bounded queue, and one that falls behind has its queue dropped and resumes at the camera's next
keyframe, so a slow viewer costs nobody else anything.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from core_ext.gop import GopCache
from core_ext.recorder import Recorder
from mediaserver.sink import CatchUp


class Unit(Protocol):
    """What the hub needs of an access unit (core_ext.depacketize.AccessUnit satisfies it)."""

    @property
    def data(self) -> bytes: ...
    @property
    def pts(self) -> int: ...
    @property
    def keyframe(self) -> bool: ...


# A GOP larger than this is cut (the camera's keyframe interval is far too long for its bitrate):
# the cache is dropped until the next keyframe, which bounds memory per camera.
MAX_GOP_BYTES = 8 * 1024 * 1024
MAX_GOP_UNITS = 600


class Listener(Protocol):
    """A consumer called synchronously for every unit (egress's fan-out: one call sends to all its viewers)."""

    def offer(self, unit: Unit) -> None: ...

    def reset(self) -> None:
        """The stream broke: what comes next does not continue what was sent."""
        ...

    def hub_closed(self) -> None: ...
    def __len__(self) -> int:
        """How many viewers it serves (a camera with any is read live, not in batches)."""
        ...


class Subscription:
    """One consumer of a hub. `get()` returns the next unit; after an overflow the next unit is a keyframe."""

    def __init__(self, hub: Hub, maxsize: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[Unit | None] = asyncio.Queue(maxsize)
        self._waiting_keyframe = False
        self.skipped = 0  # units dropped because this subscriber was slow (or waited for a keyframe)
        self.overflows = 0  # times its queue overflowed: it could not keep up (admission control reads it)
        self.closed = False

    def _offer(self, unit: Unit) -> None:
        if self._waiting_keyframe:
            if not unit.keyframe:
                self.skipped += 1
                return
            self._waiting_keyframe = False
        try:
            self._queue.put_nowait(unit)
        except asyncio.QueueFull:
            self.overflows += 1
            self._skip_to_keyframe()
            self.skipped += 1

    def _skip_to_keyframe(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
            self.skipped += 1
        self._waiting_keyframe = True

    def wait_for_keyframe(self) -> None:
        """Drop what is queued and resume at the next keyframe (e.g. the consumer has its own start point)."""
        self._skip_to_keyframe()

    @property
    def caught_up(self) -> bool:
        """Nothing queued and not skipping to a keyframe: the next unit the hub publishes is the next to send."""
        return self._queue.empty() and not self._waiting_keyframe and not self.closed

    def drain(self) -> list[Unit]:
        """The units queued now, without waiting (for a consumer that batches work); the end marker stays."""
        units: list[Unit] = []
        while not self._queue.empty():
            unit = self._queue.get_nowait()
            if unit is None:
                self._queue.put_nowait(None)
                break
            units.append(unit)
        return units

    async def get(self) -> Unit | None:
        """The next unit, or None once the subscription or the hub is closed."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._hub.unsubscribe(self)
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self._queue.put_nowait(None)


class Hub:
    """The live state of one camera: codec, parameter sets, the current GOP and the subscribers.

    It is the ingest's `UnitSink` (mediaserver/sink.py: how units reach the cache, and the one re-entry contract).
    The GOP cache and the counters live in C (core_ext/gop.pyx) so that, while the cache is a camera's only
    consumer, the UDP receiver or the TCP demuxer can add its frames there without entering Python;
    `_consumers_changed` keeps the cache's `direct` flag saying whether that holds."""

    def __init__(self, camera_id: str, codec: str = "h264") -> None:
        self.camera_id = camera_id
        self.codec = codec
        self.cache = GopCache(MAX_GOP_BYTES, MAX_GOP_UNITS)
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Listener] = []
        self.catch_up: CatchUp | None = None  # set by the ingest while a session plays
        self._consumers_changed()

    @property
    def units(self) -> int:
        return self.cache.units

    @property
    def keyframes(self) -> int:
        return self.cache.keyframes

    @property
    def bytes(self) -> int:
        return self.cache.bytes

    @property
    def last_unit_at(self) -> float:
        """Monotonic seconds."""
        return self.cache.last_unit_at

    @property
    def last_keyframe_at(self) -> float:
        return self.cache.last_keyframe_at

    def record_into(self, recorder: Recorder | None, slot: int = 0) -> None:
        """Every unit entering the cache, by either path (sink.py), is also copied into `recorder`'s batch in C
        (mediaserver/recording.py writes it); None stops that."""
        self.cache.recorder = recorder
        self.cache.record_slot = slot

    # --- producer side (ingest) ---
    def publish(self, unit: Unit) -> None:
        """The Python path of a unit into the cache (sink.py); the C path adds to `cache` directly."""
        self.cache.add(unit, time.monotonic())
        if self._subscribers:
            for sub in tuple(self._subscribers):
                sub._offer(unit)
        if self._listeners:
            for listener in tuple(self._listeners):
                listener.offer(unit)

    put = publish  # sink.UnitSink.put, without a call more per frame

    def reset(self) -> None:
        """The stream broke (reconnect): cached units can't be continued by what comes next."""
        self.cache.clear()
        for sub in tuple(self._subscribers):
            sub.wait_for_keyframe()
        for listener in tuple(self._listeners):
            listener.reset()

    def _consumers_changed(self) -> None:
        direct = not self._subscribers and not self._listeners
        if self.cache.direct and not direct and self.catch_up is not None:
            self.catch_up.go_live()
        self.cache.direct = direct

    # --- consumer side (egress, bridge) ---
    def gop(self) -> list[Unit]:
        """The units since the last keyframe (the first one is the keyframe), or [] if none is cached. A camera
        read in batches is read first, so a viewer's first picture is the present one, whatever the interval: the
        documented re-entry (sink.py), `read_now` may call `put` before the snapshot is taken."""
        if self.cache.direct and self.catch_up is not None:
            self.catch_up.read_now()
        return self.cache.snapshot()

    @property
    def gop_bytes(self) -> int:
        return self.cache.nbytes

    def subscribe(self, maxsize: int = 64) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscribers.add(sub)
        self._consumers_changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        self._consumers_changed()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)
        self._consumers_changed()

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        self._consumers_changed()

    @property
    def subscriber_count(self) -> int:
        """Consumers of the live stream: subscriptions plus the viewers of listeners."""
        return len(self._subscribers) + sum(len(listener) for listener in self._listeners)

    def close(self) -> None:
        for sub in tuple(self._subscribers):
            sub.close()
        for listener in tuple(self._listeners):
            listener.hub_closed()
        self._listeners.clear()
        self._consumers_changed()
        self.cache.clear()
