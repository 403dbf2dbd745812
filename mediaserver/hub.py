"""Per-camera hub: the GOP since the last keyframe and the subscribers that receive live access units.

A camera is read once, however many viewers it has. The hub never waits for a subscriber: each one has a
small bounded queue, and one that falls behind has its queue dropped and resumes at the camera's next
keyframe, so a slow viewer costs nobody else anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


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
        self._hub._subscribers.discard(self)
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self._queue.put_nowait(None)


class Hub:
    """The live state of one camera: codec, parameter sets, the current GOP and the subscribers."""

    def __init__(self, camera_id: str, codec: str = "h264") -> None:
        self.camera_id = camera_id
        self.codec = codec
        self._gop: list[Unit] = []
        self._gop_bytes = 0
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Listener] = []
        self.units = 0
        self.keyframes = 0
        self.bytes = 0
        self.last_unit_at = 0.0  # monotonic seconds
        self.last_keyframe_at = 0.0
        self.on_keyframe: list[Callable[[Unit], None]] = []

    # --- producer side (ingest) ---
    def publish(self, unit: Unit) -> None:
        now = time.monotonic()
        self.units += 1
        self.bytes += len(unit.data)
        self.last_unit_at = now
        self._cache(unit, now)
        for sub in tuple(self._subscribers):
            sub._offer(unit)
        for listener in tuple(self._listeners):
            listener.offer(unit)
        if unit.keyframe:
            for callback in tuple(self.on_keyframe):
                callback(unit)

    def _cache(self, unit: Unit, now: float) -> None:
        if unit.keyframe:
            self.keyframes += 1
            self.last_keyframe_at = now
            self._gop = [unit]
            self._gop_bytes = len(unit.data)
            return
        if not self._gop:
            return  # no keyframe yet: nothing decodable to cache
        self._gop_bytes += len(unit.data)
        if self._gop_bytes > MAX_GOP_BYTES or len(self._gop) >= MAX_GOP_UNITS:
            self._gop, self._gop_bytes = [], 0
            return
        self._gop.append(unit)

    def reset(self) -> None:
        """The stream broke (reconnect): cached units can't be continued by what comes next."""
        self._gop, self._gop_bytes = [], 0
        for sub in tuple(self._subscribers):
            sub.wait_for_keyframe()
        for listener in tuple(self._listeners):
            listener.reset()

    # --- consumer side (egress, bridge) ---
    def gop(self) -> list[Unit]:
        """The units since the last keyframe (the first one is the keyframe), or [] if none is cached."""
        return list(self._gop)

    @property
    def gop_bytes(self) -> int:
        return self._gop_bytes

    def subscribe(self, maxsize: int = 64) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscribers.add(sub)
        return sub

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

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
        self._gop, self._gop_bytes = [], 0
