"""The seam between ingest and the hub, both ways, in one place.

Ingest -> hub (`UnitSink`): an RTSP session (mediaserver/rtsp/) knows only this interface. Every access unit it
completes reaches the hub's GOP cache by exactly one of two paths:

1. `sink.put(unit)`: Python, for a watched camera (and the first keyframe of every session, which Python vets);
   `Hub.put` caches the unit and offers it to the subscribers and listeners.
2. the C fast path: `sink.cache` is a `core_ext.gop.GopCache`; the session hands it to its demuxer
   (core_ext/framing.pyx) or UDP receiver (core_ext/udprecv.pyx), and while `cache.direct` is true (nobody but
   the cache consumes the camera) those add the camera's units to it themselves with `GopCache.take_c`, never
   entering Python. A sink without a C cache (`cache = None`) gets every unit through `put`.

Either way the unit ends in the cache, and a cache with a recorder (`Hub.record_into`, core_ext/recorder.pyx)
copies it into the recording ring's batch there, in C: recording adds no Python per frame to either path.

Hub -> ingest (`CatchUp`): a camera nobody watches is read in batches a few times a second, so its cache may lag
by one interval. The hub steers it with two calls, and this is the contract for re-entry: `Hub.gop()` calls
`catch_up.read_now()` synchronously, which reads the sockets and may call `Hub.put` (or add to the cache in C)
before `gop()` takes its snapshot. That is the only place the hub is re-entered from inside one of its calls.
"""

from __future__ import annotations

from typing import Protocol

from core_ext.depacketize import AccessUnit
from core_ext.gop import GopCache


class UnitSink(Protocol):
    """Where a camera session hands its access units (mediaserver.hub.Hub implements it)."""

    @property
    def cache(self) -> GopCache | None:
        """The C-level target of the fast path (see the module docstring), or None."""
        ...

    def put(self, unit: AccessUnit) -> None:
        """One complete access unit, in stream order (the first of a session is a vetted keyframe)."""
        ...


class CatchUp(Protocol):
    """What the hub may ask of the session feeding it (mediaserver.rtsp.client.RtspClient implements it)."""

    def read_now(self) -> None:
        """Read what the camera sent since the last batch, into the sink, before returning (Hub.gop() only)."""
        ...

    def go_live(self) -> None:
        """A consumer arrived: read every packet from now on, not at the next batch."""
        ...
