"""Always-on ingest of one camera: connect, stream into its hub, and on any failure log it, count it and
reconnect with jittered backoff under the process-wide reconnect cap. One camera's trouble stays its own.

The session (mediaserver/rtsp/client.py) sees the hub only as a `UnitSink` and the hub sees the session only as
its `CatchUp` (mediaserver/sink.py); this module wires the two for the time a session plays."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from enum import StrEnum

from mediaserver.hub import Hub
from mediaserver.rtsp.batch_reader import BatchReader
from mediaserver.rtsp.client import RtspClient, Source, Timeouts
from mediaserver.rtsp.errors import ErrorKind, RtspError
from mediaserver.rtsp.reconnect import Backoff, RateLimiter

log = logging.getLogger("goldentime.ingest")

# RTP error counters worth reporting per camera (core_ext.rtp.RtpStats attributes).
RTP_COUNTERS = (
    "lost", "reordered", "duplicates", "bad_version", "bad_padding", "truncated", "bad_payload_type",
    "unsupported", "discarded_aus", "oversized",
)  # fmt: skip

# A session that streamed this long is healthy: the next failure starts the backoff from scratch.
STABLE_AFTER_S = 10.0


class State(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class CameraIngest:
    def __init__(
        self,
        hub: Hub,
        source: Source,
        limiter: RateLimiter,
        timeouts: Timeouts | None = None,
        backoff: Backoff | None = None,
        batch: BatchReader | None = None,
        start_limiter: RateLimiter | None = None,
    ) -> None:
        self.hub = hub
        self.source = source
        self.timeouts = timeouts or Timeouts()
        self.backoff = backoff or Backoff()
        self._limiter = limiter
        # The first connect of a camera in this process (a worker starting or restarted after a crash) is not a
        # reconnect storm: it may use a larger budget, so the cameras of a restarted worker are back in seconds.
        self._start_limiter = start_limiter
        self._task: asyncio.Task[None] | None = None
        self.state = State.IDLE
        self.errors: Counter[str] = Counter()  # by ErrorKind (the values are the metric's labels)
        self.warnings: Counter[str] = Counter()
        self.last_error = ""
        self.connects = 0  # successful PLAYs
        self.attempts = 0
        self.rtp_totals: Counter[str] = Counter()  # from finished sessions; status() adds the live one
        self.client: RtspClient | None = None
        self.reads = 0  # socket reads of finished sessions; status() adds the live one
        self._batch = batch  # while nobody watches, read a few times a second (rtsp/batch_reader.py)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"ingest:{self.hub.camera_id}")

    async def stop(self) -> None:
        self.state = State.STOPPED
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        first = True
        while True:
            await (self._start_limiter if first and self._start_limiter is not None else self._limiter).acquire()
            first = False
            started = time.monotonic()
            await self._session()
            if time.monotonic() - started > STABLE_AFTER_S:
                self.backoff.reset()
            self.state = State.BACKOFF
            await asyncio.sleep(self.backoff.next_delay())

    async def _session(self) -> None:
        self.state = State.CONNECTING
        self.attempts += 1
        client = RtspClient(self.source, self.hub, self.timeouts, self._batch, self._watched)
        self.client = client
        try:
            try:
                await client.start()
            finally:
                self.warnings.update(client.warnings)
            self.hub.codec = client.codec
            self.hub.catch_up = client
            self.connects += 1
            self.state = State.STREAMING
            log.info("%s: streaming %s over %s", self.hub.camera_id, client.codec, self.source.transport)
            await client.run()
        except RtspError as e:
            self.errors[e.kind] += 1
            self.last_error = f"{e.kind}: {e}"
            log.warning("%s: %s; reconnecting", self.hub.camera_id, self.last_error)
        except Exception as e:  # a bug must cost one camera a reconnect, never the worker
            self.errors[ErrorKind.INTERNAL] += 1
            self.last_error = f"{ErrorKind.INTERNAL}: {e!r}"
            log.exception("%s: internal error; reconnecting", self.hub.camera_id)
        finally:
            self.client = None
            self.hub.catch_up = None
            self.hub.reset()
            self.rtp_totals.update(_rtp_counters(client))
            self.reads += client.socket_reads
            await client.close()

    def _watched(self) -> bool:
        return self.hub.subscriber_count > 0

    def socket_reads(self) -> int:
        return self.reads + (self.client.socket_reads if self.client else 0)

    def rtp_counters(self) -> Counter[str]:
        return self.rtp_totals + _rtp_counters(self.client)

    def status(self) -> dict[str, object]:
        rtp = self.rtp_counters()
        return {
            "state": self.state.value,
            "codec": self.hub.codec,
            "transport": self.source.transport,
            "connects": self.connects,
            "attempts": self.attempts,
            "errors": dict(self.errors),
            "warnings": dict(self.warnings),
            "last_error": self.last_error,
            "packets_lost": rtp["lost"],
            "rtp_errors": {k: v for k, v in rtp.items() if k != "lost"},
            "units": self.hub.units,
            "gop_units": len(self.hub.cache),
            "gop_bytes": self.hub.gop_bytes,
            "gop_age_s": round(time.monotonic() - self.hub.last_keyframe_at, 3) if self.hub.gop_bytes else None,
            "viewers": self.hub.subscriber_count,
        }


def _rtp_counters(client: RtspClient | None) -> Counter[str]:
    if client is None or client.depacketizer is None:
        return Counter()
    stats = client.depacketizer.stats
    counters = Counter({name: getattr(stats, name) for name in RTP_COUNTERS if getattr(stats, name)})
    counters.update({name: count for name, count in client.udp_counters().items() if count})  # UDP drops
    return counters
