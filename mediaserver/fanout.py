"""Sends viewers' video with core_ext.fanout instead of aiortc's per-packet Python path.

aiortc keeps what it is good at: ICE, DTLS, SDP, and RTCP (reports, NACK and PLI parsing). When it starts a
viewer's RTP sender, `FastSender` takes over that sender's RTP loop and RTCP reports:
- while the viewer is opened on the present (bridge frames, a replay, waiting for a keyframe: bridge.py's
  `ViewerFeed`), its own task sends each unit (`RtpOutput.send`, packetised once per unit by `FrameCache`);
- once it is on plain passthrough and caught up, it is handed to the camera's `FanoutGroup`, which sends each
  unit the camera publishes to all its viewers in one C call (`send_all`): no task, queue or Python per viewer;
- a picture-loss request (PLI/FIR) takes the viewer out of the group, through the bridge, and back.
NACKs are answered from the viewer's history of shared frames (RTX when negotiated).

The hooks use aiortc's private sender attributes (name-mangled); `pyproject.toml` pins aiortc's minor version
and tests/test_fanout.py fails loudly if they move.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpByePacket, RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket
from pylibsrtp._binding import ffi, lib

from core_ext.fanout import RtpFrame, RtpOutput, packetize_h264, send_all
from mediaserver.bridge import ViewerFeed
from mediaserver.hub import Hub, Unit

log = logging.getLogger(__name__)

# srtp_protect of the libsrtp that aiortc's SRTP sessions live in (the same library, so the same struct layout)
if ffi.getctype(ffi.typeof(lib.srtp_protect)) != "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)":
    raise ImportError(f"unexpected libsrtp API: srtp_protect is {ffi.typeof(lib.srtp_protect)}")
_SRTP_PROTECT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))


def _private(sender: RTCRtpSender, name: str) -> Any:
    return getattr(sender, f"_RTCRtpSender__{name}")


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
    """Sends one viewer's RTP for an aiortc sender: see the module docstring."""

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
        self.sender: RTCRtpSender | None = None

    def attach(self, sender: RTCRtpSender) -> None:
        """Take over the sender's RTP loop, RTCP reports, retransmissions and keyframe requests."""
        self.sender = sender
        sender._run_rtp = self._run_rtp  # type: ignore[method-assign]
        sender._run_rtcp = self._run_rtcp  # type: ignore[method-assign]
        sender._retransmit = self._retransmit  # type: ignore[method-assign]
        sender._send_keyframe = self._send_keyframe  # type: ignore[method-assign]

    @property
    def frames(self) -> int:
        return 0 if self.output is None else self.output.frames

    @property
    def stalls(self) -> int:
        """Sends the kernel refused for a full socket buffer (admission control reads them as overflows)."""
        return 0 if self.output is None else self.output.stalls

    # --- RTP ---
    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        assert self.sender is not None
        _private(self.sender, "rtp_started").set()
        try:
            self.output = self._make_output(self.sender, codec)
            await self._pump(self.output)
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:
            log.exception("viewer sender failed")
        finally:
            self._leave_group()
            if self.output is not None:
                self.output.close()
            _private(self.sender, "rtp_exited").set()

    @staticmethod
    def _make_output(sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> RtpOutput:
        dtls = sender.transport
        srtp = dtls._tx_srtp
        ids = _private(sender, "rtp_header_extensions_map")._HeaderExtensionsMap__ids
        rtx_type = _private(sender, "rtx_payload_type")
        if codec.payloadType is None:
            raise ConnectionError("no payload type negotiated")
        output = RtpOutput(
            sender._ssrc,
            codec.payloadType,
            first_seq=random.getrandbits(16),
            ts_offset=random.getrandbits(32),
            rtx_ssrc=sender._rtx_ssrc,
            rtx_payload_type=-1 if rtx_type is None else rtx_type,
            abs_send_time_id=ids.abs_send_time or 0,
            mid_id=ids.mid or 0,
            mid=(_private(sender, "mid") or "").encode(),
            srtp_ctx=int(ffi.cast("uintptr_t", srtp._srtp[0])),
            protect=_SRTP_PROTECT,
            keepalive=srtp,
        )
        _target(sender, output)
        return output

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

    # --- RTCP and feedback (called by aiortc) ---
    def _send_keyframe(self) -> None:
        if self.feed.refresh() and self.group is not None:
            self._leave_group()  # back to its own task: bridge IDR, then passthrough, then the group again
            self._wake.set()

    async def _retransmit(self, sequence_number: int) -> None:
        if self.output is not None:
            self.output.retransmit(sequence_number)

    async def _run_rtcp(self) -> None:
        """aiortc's sender-report loop, with the counters kept in C."""
        sender = self.sender
        assert sender is not None
        _private(sender, "rtcp_started").set()
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())
                if self.output is not None:
                    _target(sender, self.output)
                    await sender._send_rtcp(self._report(sender, self.output))
        except asyncio.CancelledError:
            pass
        await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])
        _private(sender, "rtcp_exited").set()

    @staticmethod
    def _report(sender: RTCRtpSender, output: RtpOutput) -> list[Any]:
        info = RtcpSenderInfo(
            ntp_timestamp=output.last_ntp,
            rtp_timestamp=output.last_rtp_timestamp,
            packet_count=output.packets & 0xFFFFFFFF,
            octet_count=output.octets & 0xFFFFFFFF,
        )
        packets: list[Any] = [RtcpSrPacket(ssrc=sender._ssrc, sender_info=info)]
        cname = _private(sender, "cname")
        if cname is not None:
            packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode())])]))
        return packets


def _target(sender: RTCRtpSender, output: RtpOutput) -> None:
    """Point the output at the viewer's selected ICE pair (the socket and address aioice would send with)."""
    pair = sender.transport.transport._connection._nominated.get(1)
    if pair is None:
        raise ConnectionError("no selected ICE candidate pair")
    sock = pair.protocol.transport.get_extra_info("socket")
    if sock is None:
        raise ConnectionError("the ICE pair has no socket")
    host, port = pair.remote_addr
    output.set_target(sock.fileno(), host, port)  # a no-op while the pair stays the same


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
