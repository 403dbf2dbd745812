"""A cheap WebRTC viewer for load tests: still a real peer, but it only counts the media.

aiortc's `RTCPeerConnection` does everything the server sees of a client: the SDP offer, ICE (connectivity
and consent checks), DTLS-SRTP, the server's RTCP sender reports. Only incoming SRTP media skips aiortc's
per-packet Python (RtpPacket objects, a task hop through a queue, jitter buffer, depacketiser, decoder
thread), which costs about what the server spends sending it: the socket's protocol gets a
`datagram_received` that takes RTP straight to libsrtp's unprotect on the DTLS transport's own SRTP session
(so authentication and replay checks still run) and to an `RtpCounter`; STUN, DTLS and SRTCP go on to aiortc.

What a viewer reports: packets, bytes, lost (RFC 3550: extended highest sequence - base + 1 - received, so
reordering is tolerated), frames (marker bits: the last packet of each access unit), SRTP errors. It sends
receiver reports (~1/s, as aiortc's receiver would) from those counts; it sends no NACK or PLI, so a lost
packet stays lost (losses are the transport's, not hidden by retransmission).

`AiortcViewer` is the old full-aiortc viewer (for comparison runs). `tee=True` also hands every decrypted
packet to aiortc's own pipeline, so aiortc's receiver stats can be compared with the counter on the same
packets (`viewer_farm.py --check`).
"""

from __future__ import annotations

import asyncio
import queue
import random
import struct
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp._binding as _srtp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, clamp_packets_lost

from mediaserver.egress import use_ice_hosts

_HEADER = struct.Struct("!HII")  # sequence, timestamp, SSRC (bytes 2..11 of the RTP header)
_MAX_PACKET = 1500  # pylibsrtp's session buffer


class RtpCounter:
    """Counts one RTP stream (the first SSRC seen; packets of any other SSRC, e.g. RTX, go to `other`)."""

    __slots__ = ("_prior", "base", "bytes", "cycles", "errors", "frames", "other", "packets", "ssrc", "top")

    def __init__(self) -> None:
        self.packets = self.bytes = self.frames = self.other = self.errors = 0
        self.ssrc = -1
        self.base = self.top = self.cycles = 0  # first sequence, highest sequence, its wraps (x 65536)
        self._prior = (0, 0)  # (expected, received) at the last receiver report

    def add(self, rtp: bytes, size: int) -> None:
        """One packet: its RTP header (SRTP leaves the header in clear) and its decrypted size."""
        seq, _, ssrc = _HEADER.unpack_from(rtp, 2)
        if ssrc != self.ssrc:
            if self.ssrc >= 0:
                self.other += 1
                return
            self.ssrc, self.base, self.top = ssrc, seq, seq
        else:
            ahead = (seq - self.top) & 0xFFFF
            if 0 < ahead < 0x8000:  # newer (else a duplicate or a late, reordered packet)
                if seq < self.top:
                    self.cycles += 0x10000
                self.top = seq
        self.packets += 1
        self.bytes += size
        if rtp[1] & 0x80:
            self.frames += 1

    @property
    def expected(self) -> int:
        return self.cycles + self.top - self.base + 1 if self.ssrc >= 0 else 0

    @property
    def lost(self) -> int:
        return self.expected - self.packets

    def snapshot(self) -> tuple[int, int, int, int]:
        """(frames, packets, lost, bytes) so far: differences of two snapshots measure a window."""
        return self.frames, self.packets, self.lost, self.bytes

    def report(self, lsr: int = 0, dlsr: int = 0) -> RtcpReceiverInfo:
        """An RFC 3550 report block; fraction lost is over the interval since the previous one."""
        expected, received = self.expected - self._prior[0], self.packets - self._prior[1]
        self._prior = (self.expected, self.packets)
        lost = expected - received
        fraction = (lost << 8) // expected if expected > 0 and lost > 0 else 0
        return RtcpReceiverInfo(ssrc=self.ssrc, fraction_lost=fraction, packets_lost=clamp_packets_lost(self.lost),
                                highest_sequence=self.cycles + self.top, jitter=0, lsr=lsr, dlsr=dlsr)  # fmt: skip


class Viewer:
    """One recvonly WebRTC viewer: `offer()`, POST it, `accept(answer)`, `snapshot()`, `close()`."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.transceiver = self.pc.addTransceiver("video", direction="recvonly")
        self._tasks: set[asyncio.Task[Any]] = set()

    async def offer(self) -> str:
        with use_ice_hosts(["127.0.0.1"]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    def snapshot(self) -> tuple[int, int, int, int]:
        """(frames, packets, lost, bytes) received so far; differences of two snapshots measure a window."""
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        return bool(self.pc.connectionState == "connected")

    @property
    def errors(self) -> int:
        """Packets that failed SRTP authentication or replay checks (counted by the probe only)."""
        return 0

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class ProbeViewer(Viewer):
    """The cheap viewer: SRTP media goes from the socket to `counter` (see the module's doc)."""

    def __init__(self, tee: bool = False, drop_every: int = 0) -> None:
        """`drop_every` (tee only): discard RTP packets whose sequence number is a multiple of it before either
        count sees them, so the two counts can be compared on losses too."""
        super().__init__()
        self.counter = RtpCounter()
        self.tee = tee
        self.drop_every = drop_every
        self.dropped = 0
        self.early = 0  # RTP that came before this side's DTLS handshake finished (no keys yet): dropped
        self.frozen = False  # tee: stop taking packets, so both counts cover the same ones
        self.aiortc_frames: FrameCount | None = None

    async def accept(self, answer: str) -> None:
        self._attach()  # before any media can arrive: the server sends once its DTLS handshake is done
        await super().accept(answer)
        if self.tee:  # aiortc's receiver counts and reports too
            self.aiortc_frames = FrameCount.install(self.transceiver.receiver)
        else:
            self._spawn(self._send_reports())

    def snapshot(self) -> tuple[int, int, int, int]:
        return self.counter.snapshot()

    @property
    def errors(self) -> int:
        return self.counter.errors

    def aiortc_counts(self) -> tuple[int, int, int]:
        """tee: what aiortc's own receiver counted of the same stream: (frames, packets, lost)."""
        assert self.aiortc_frames is not None
        stream = remote_streams(self.transceiver.receiver).get(self.counter.ssrc)
        packets, lost = (stream.packets_received, stream.packets_lost) if stream else (0, 0)
        return self.aiortc_frames.frames, packets, lost

    def _attach(self) -> None:
        """Put the fast path in front of every ICE socket of this peer (the pair is not chosen yet)."""
        dtls = self.transceiver.receiver.transport
        for protocol in dtls.transport._connection._protocols:
            setattr(protocol, "datagram_received", self._fast_path(dtls, protocol.datagram_received))  # noqa: B010

    def _fast_path(self, dtls: Any, aiortc_path: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
        """pylibsrtp's `Session.unprotect` costs more in its Python wrapper than in libsrtp: this calls libsrtp
        on the same session and buffer directly, with one reused length cell, and copies nothing out (the
        header is in clear and the counter needs only the decrypted size)."""
        counter, add, tee, unprotect = self.counter, self.counter.add, self.tee, _srtp.lib.srtp_unprotect
        state = cdata = buffer = None
        length = _srtp.ffi.new("int *")

        def datagram_received(data: bytes, addr: Any) -> None:
            nonlocal state, cdata, buffer
            if not 127 < data[0] < 192 or 191 < data[1] < 209:  # not RTP: STUN, DTLS, SRTCP
                aiortc_path(data, addr)
                return
            if buffer is None:
                session = dtls._rx_srtp  # set once the DTLS handshake is done
                if session is None:
                    self.early += 1
                    return
                state, cdata, buffer = session._srtp[0], session._cdata, session._buffer
            if tee and (self.frozen or self._drop(data)):
                return
            size = len(data)
            if size > _MAX_PACKET:
                counter.errors += 1
                return
            buffer[0:size] = data
            length[0] = size
            if unprotect(state, cdata, length):  # authentication or replay check failed
                counter.errors += 1
                return
            if tee:
                self._spawn(dtls._handle_rtp_data(buffer[0 : length[0]], arrival_time_ms=int(time.time() * 1000)))
            add(data, length[0])

        return datagram_received

    def _drop(self, data: bytes) -> bool:
        """By sequence number, so a retransmission of a dropped packet is dropped too (a lasting loss)."""
        if self.drop_every and (data[2] << 8 | data[3]) % self.drop_every == 0:
            self.dropped += 1
            return True
        return False

    async def _send_reports(self) -> None:
        """Receiver reports at aiortc's own pace (0.5..1.5 s), with LSR/DLSR from the server's last SR."""
        receiver, dtls = self.transceiver.receiver, self.transceiver.receiver.transport
        while True:
            await asyncio.sleep(0.5 + random.random())
            counter = self.counter
            if counter.ssrc < 0:
                continue
            lsr_by_ssrc: dict[int, int] = getattr(receiver, "_RTCRtpReceiver__lsr", {})
            lsr_time: dict[int, float] = getattr(receiver, "_RTCRtpReceiver__lsr_time", {})
            lsr, dlsr = lsr_by_ssrc.get(counter.ssrc, 0), 0
            if counter.ssrc in lsr_time:
                dlsr = int(min(max(0.0, time.time() - lsr_time[counter.ssrc]), 65535) * 65536)
            packet = RtcpRrPacket(ssrc=self.transceiver.sender._ssrc, reports=[counter.report(lsr, dlsr)])
            try:
                await dtls._send_rtp(bytes(packet))
            except ConnectionError:
                return


class AiortcViewer(Viewer):
    """The full aiortc receive path (RtpPacket, jitter buffer, depacketiser, NACK/PLI, reports); only the
    decoder is skipped: the frames handed to it are counted."""

    frames: FrameCount | None = None

    async def accept(self, answer: str) -> None:
        await super().accept(answer)
        self.frames = FrameCount.install(self.transceiver.receiver)

    def snapshot(self) -> tuple[int, int, int, int]:
        streams = list(remote_streams(self.transceiver.receiver).values())  # the media SSRC first, then RTX
        packets, lost = (streams[0].packets_received, streams[0].packets_lost) if streams else (0, 0)
        return (self.frames.frames if self.frames else 0), packets, lost, 0


class FrameCount:
    """Stands in for an aiortc receiver's decoder queue: counts the frames its jitter buffer completes and
    drops them (no decode); the end marker still reaches the decoder thread, so it stops."""

    def __init__(self, decoder_queue: queue.Queue[Any]) -> None:
        self.decoder_queue = decoder_queue
        self.frames = 0

    @classmethod
    def install(cls, receiver: Any) -> FrameCount:
        count = cls(getattr(receiver, _DECODER_QUEUE))
        setattr(receiver, _DECODER_QUEUE, count)
        return count

    def put(self, item: Any) -> None:
        if item is None:
            self.decoder_queue.put(None)
        else:
            self.frames += 1

    def get(self) -> Any:
        """The decoder thread may start after `install` (aiortc starts it once DTLS is up): it waits here."""
        return self.decoder_queue.get()


_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


def remote_streams(receiver: Any) -> dict[int, Any]:
    """aiortc's receiver statistics per SSRC (its getStats() keeps only one SSRC: they share an id)."""
    streams: dict[int, Any] = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})
    return streams
