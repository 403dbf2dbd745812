"""Sends viewers' video with core_ext.fanout instead of aiortc's per-packet Python path.

aiortc keeps what it is good at: ICE, DTLS, SDP, and RTCP (reports, NACK and PLI parsing). When it starts a
viewer's RTP sender, `FastSender` takes over that sender's RTP loop and RTCP reports:
- while the viewer is opened on the present (bridge frames, a replay, waiting for a keyframe: bridge.py's
  `ViewerFeed`), its own task sends each unit (`RtpOutput.send`, packetised once per unit by `FrameCache`);
- once it is on plain passthrough and caught up, it is handed to the camera's `FanoutGroup`, which sends each
  unit the camera publishes to all its viewers in one C call (`send_all`): no task, queue or Python per viewer;
- a picture-loss request (PLI/FIR) takes the viewer out of the group, through the bridge, and back.
NACKs are answered from the viewer's history of shared frames (RTX when negotiated).

Everything aiortc-private is behind rtc_seam.py: `take_over` gives this module a sender's loops, `Wire` what
it negotiated (SSRCs, payload types, extension ids, SRTP context, socket and peer).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable

from aiortc import RTCRtpSender

from core_ext.fanout import RtpFrame, RtpOutput, packetize_h264, send_all
from mediaserver.bridge import ViewerFeed
from mediaserver.hub import Hub, Unit
from mediaserver.rtc_seam import Counters, Peer, Wire, take_over

log = logging.getLogger(__name__)


class FrameCache:
    """RTP payloads of the newest units, by identity: each unit is packetised once for all its viewers."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._frames: OrderedDict[int, tuple[Unit, RtpFrame]] = OrderedDict()
        self.packetised = 0

    def get(self, unit: Unit) -> RtpFrame:
        hit = self._frames.get(id(unit))
        if hit is not None and hit[0] is unit:
            return hit[1]
        frame = packetize_h264(unit.data, unit.pts)
        self.packetised += 1
        self._frames[id(unit)] = (unit, frame)  # holding the unit keeps its id from being reused
        if len(self._frames) > self._size:
            self._frames.popitem(last=False)
        return frame


# Datagrams sent per event-loop iteration by one group, per frame queued: a keyframe (~40 packets) to 1,000 viewers
# is ~40,000 datagrams, ~120 ms of CPU; in slices of ~3 ms the other cameras' reads and viewers' RTCP interleave.
SLICE_PACKETS = 1024
# Frames a group may have queued (it is behind by this much only when the worker is overloaded, which admission
# control should have refused): older ones are dropped and the group resumes at the next keyframe.
MAX_BACKLOG = 25


class FanoutGroup:
    """The viewers of one camera on plain passthrough: every unit goes to all of them in one C call.

    Each frame is sent to the members it had when it arrived (`send_all` skips one that left meanwhile); a frame to
    many viewers is sent in slices, one per loop iteration, and frames never overtake each other."""

    def __init__(self, hub: Hub, cache: FrameCache, on_empty: Callable[[FanoutGroup], None]) -> None:
        self.hub = hub
        self._cache = cache
        self._on_empty = on_empty
        self._members: dict[RtpOutput, FastSender] = {}
        self._outputs: list[RtpOutput] = []
        self._backlog: deque[tuple[RtpFrame, list[RtpOutput], int]] = deque()
        self._scheduled: asyncio.Handle | None = None
        self._waiting_keyframe = False
        self.skipped_frames = 0  # dropped from an overlong backlog
        hub.add_listener(self)

    def __len__(self) -> int:
        return len(self._outputs)

    def add(self, sender: FastSender, output: RtpOutput) -> None:
        output.owner = self
        self._members[output] = sender
        self._outputs.append(output)

    def remove(self, output: RtpOutput) -> None:
        if self._members.pop(output, None) is not None:
            output.owner = None
            self._outputs.remove(output)
        if not self._outputs:
            self._stop()
            self._on_empty(self)

    def _stop(self) -> None:
        self.hub.remove_listener(self)
        self._backlog.clear()
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    # --- hub listener ---
    def offer(self, unit: Unit) -> None:
        if self._waiting_keyframe:
            if not unit.keyframe:
                return
            self._waiting_keyframe = False
        try:
            frame = self._cache.get(unit)
        except Exception:  # called from the camera's ingest: a fan-out bug must not cost the camera its stream
            log.exception("fan-out of %s failed", self.hub.camera_id)
            return
        if len(self._backlog) >= MAX_BACKLOG:
            self.skipped_frames += len(self._backlog)
            self._backlog.clear()
            if not unit.keyframe:
                self._waiting_keyframe = True
                return
        self._backlog.append((frame, list(self._outputs), 0))
        if self._scheduled is None:
            self._drain()  # the first slice at once: a small group is done here, with no added latency

    def _drain(self) -> None:
        self._scheduled = None
        budget = SLICE_PACKETS * len(self._backlog)  # behind: larger slices, so the group catches up, never drifts
        while self._backlog and budget > 0:
            frame, outputs, start = self._backlog[0]
            stop = min(len(outputs), start + max(1, budget // max(1, frame.count)))
            try:
                failed = send_all(outputs, frame, start, stop, self)
            except Exception:
                log.exception("fan-out of %s failed", self.hub.camera_id)
                failed, stop = [], len(outputs)
            budget -= (stop - start) * frame.count
            if stop >= len(outputs):
                self._backlog.popleft()
            else:
                self._backlog[0] = (frame, outputs, stop)
            for output in failed:
                log.warning("viewer socket failed (errno %d): ending its session", output.last_errno)
                if output in self._members:
                    self._members[output].end()
        if self._backlog and self._members:
            self._scheduled = asyncio.get_running_loop().call_soon(self._drain)

    def reset(self) -> None:
        self._waiting_keyframe = True

    def hub_closed(self) -> None:
        self._stop()
        for sender in list(self._members.values()):
            sender.end()


class FastSender:
    """Sends one viewer's RTP for an aiortc sender (rtc_seam.Loops): see the module docstring."""

    def __init__(
        self,
        feed: ViewerFeed,
        groups: Callable[[Hub], FanoutGroup],
        cache: FrameCache,
        on_end: Callable[[], None],
    ) -> None:
        self.feed = feed
        self._groups = groups
        self._cache = cache
        self._on_end = on_end
        self.output: RtpOutput | None = None
        self.group: FanoutGroup | None = None
        self._wake = asyncio.Event()
        self._ended = False

    def attach(self, sender: RTCRtpSender) -> None:
        """Take over the sender's RTP loop, RTCP reports, retransmissions and keyframe requests."""
        take_over(sender, self)

    @property
    def frames(self) -> int:
        return 0 if self.output is None else self.output.frames

    @property
    def stalls(self) -> int:
        """Sends the kernel refused for a full socket buffer (admission control reads them as overflows)."""
        return 0 if self.output is None else self.output.stalls

    # --- RTP ---
    async def send(self, wire: Wire) -> None:
        try:
            self.output = _output(wire)
            await self._pump(self.output)
        finally:
            self._leave_group()
            if self.output is not None:
                self.output.close()

    async def _pump(self, output: RtpOutput) -> None:
        """Send what the feed gives until the viewer is caught up with live, then let the group send."""
        while not self._ended:
            unit = await self.feed.next()
            if unit is None:  # the camera was removed
                self.end()
                return
            output.send(self._cache.get(unit))
            if self.feed.caught_up():  # same tick as the hand-over: no unit missed or sent twice
                self.feed.hand_over()
                self.group = self._groups(self.feed.hub)
                self.group.add(self, output)
                await self._wake.wait()
                self._wake.clear()

    def _leave_group(self) -> None:
        if self.group is not None and self.output is not None:
            self.group.remove(self.output)
        self.group = None

    def end(self) -> None:
        """The camera is gone or the viewer's socket failed: stop and let egress close the session."""
        if not self._ended:
            self._ended = True
            self._leave_group()
            self._wake.set()
            self._on_end()

    # --- RTCP and feedback (called through rtc_seam) ---
    def keyframe(self) -> None:
        if self.feed.refresh() and self.group is not None:
            self._leave_group()  # back to its own task: bridge IDR, then passthrough, then the group again
            self._wake.set()

    def retransmit(self, sequence_number: int) -> None:
        if self.output is not None:
            self.output.retransmit(sequence_number)

    def report(self, peer: Peer) -> Counters | None:
        """The sender report's counters, kept in C; the output follows the ICE pair if it changed."""
        output = self.output
        if output is None:
            return None
        output.set_target(peer.fd, peer.host, peer.port)  # a no-op while the pair stays the same
        return Counters(output.last_ntp, output.last_rtp_timestamp, output.packets, output.octets)


def _output(wire: Wire) -> RtpOutput:
    output = RtpOutput(
        wire.ssrc,
        wire.payload_type,
        first_seq=random.getrandbits(16),
        ts_offset=random.getrandbits(32),
        rtx_ssrc=wire.rtx_ssrc or 0,
        rtx_payload_type=-1 if wire.rtx_payload_type is None else wire.rtx_payload_type,
        abs_send_time_id=wire.abs_send_time_id,
        mid_id=wire.mid_id,
        mid=wire.mid,
        srtp_ctx=wire.srtp_ctx,
        protect=wire.srtp_protect,
        keepalive=wire.srtp_session,
    )
    output.set_target(wire.peer.fd, wire.peer.host, wire.peer.port)
    return output


class FanoutPool:
    """The fan-out groups of one worker (one per camera with passthrough viewers) and the shared frame cache."""

    def __init__(self) -> None:
        self.cache = FrameCache()
        self._groups: dict[Hub, FanoutGroup] = {}

    def group(self, hub: Hub) -> FanoutGroup:
        group = self._groups.get(hub)
        if group is None:
            group = self._groups[hub] = FanoutGroup(hub, self.cache, self._forget)
        return group

    def _forget(self, group: FanoutGroup) -> None:
        if self._groups.get(group.hub) is group:
            del self._groups[group.hub]

    def sender(self, feed: ViewerFeed, on_end: Callable[[], None]) -> FastSender:
        return FastSender(feed, self.group, self.cache, on_end)

    @property
    def viewers(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def __len__(self) -> int:
        return len(self._groups)
