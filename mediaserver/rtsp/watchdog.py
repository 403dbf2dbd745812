"""The per-event-loop watchdog of RTSP sessions, and how it judges that a camera still streams.

One timer per event loop checks every playing session twice a second. A timer (or an asyncio.wait with a
timeout) per session was a large share of an idle camera's cost at thousands of cameras per worker.

Progress is complete access units, never bytes: a camera that sends garbage fast (frames that never complete a
unit) is stalled like a silent one. Bytes still waiting in a socket excuse a stall only while we read nothing
from it (the worker fell behind, e.g. CPU starvation: cutting then would turn a few slow seconds into a
reconnect storm of healthy cameras); bytes read that completed nothing excuse nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import termios
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

log = logging.getLogger("goldentime.rtsp")


class Watched(Protocol):
    name: str

    def watch(self, now: float) -> None:
        """Called by the watchdog about twice a second; fails the session itself if it must."""
        ...


class Progress:
    """The stall judgement of one session, fed at every watchdog tick."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._media_at = -1.0
        self._input_mark = -1  # input_count when media last advanced

    def stalled(self, now: float, media_at: float, input_count: int, fds: Callable[[], Iterable[int]]) -> bool:
        """`media_at`: when a complete access unit last arrived; `input_count`: any measure of what was read
        from the media socket (frames, datagrams) that grows with every read; `fds()`: the sockets to look into
        (asked only past the timeout: a healthy camera costs a comparison per tick)."""
        if media_at != self._media_at:
            self._media_at, self._input_mark = media_at, input_count
        if now - media_at <= self.stall_s:
            return False
        if input_count != self._input_mark:
            return True  # we read but nothing completed: garbage, not a slow worker
        return not bytes_waiting(fds())


def bytes_waiting(fds: Iterable[int]) -> bool:
    """Bytes the camera sent that we have not read yet."""
    for fd in fds:
        if fd < 0:
            continue
        try:
            if struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0] > 0:
                return True
        except OSError:
            pass
    return False


class Watchdog:
    INTERVAL = 0.5
    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sessions: set[Watched] = set()
        self._handle: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Watchdog:
        watchdog = cls._by_loop.get(loop)
        if watchdog is None:
            watchdog = cls._by_loop[loop] = cls(loop)
        return watchdog

    def add(self, session: Watched) -> None:
        self._sessions.add(session)
        if self._handle is None:
            self._handle = self._loop.call_later(self.INTERVAL, self._tick)

    def discard(self, session: Watched) -> None:
        self._sessions.discard(session)

    def __len__(self) -> int:
        return len(self._sessions)

    def _tick(self) -> None:
        now = time.monotonic()
        for session in tuple(self._sessions):
            try:
                session.watch(now)
            except Exception:  # one session's bug must not stop the others' checks
                log.exception("watchdog check of %s failed", session.name)
        self._handle = self._loop.call_later(self.INTERVAL, self._tick) if self._sessions else None
