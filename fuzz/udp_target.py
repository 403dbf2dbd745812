"""Fuzz target `udp`: the UDP receiver's datagram path (core_ext/udprecv.pyx), over a real loopback socket pair.

An input is a sequence of datagrams, each sent from one of three senders: the camera (its address and its RTP port),
a neighbour (the camera's address, another port) or, with a settings bit, a pinned SSRC that the camera's own
datagrams may not carry. The receiver drains after every few datagrams (so the socket never overflows and every
datagram is accounted for) and the checks are:
- nothing escapes drain() (an OSError would be a socket error: none happens on loopback);
- every datagram is counted exactly once: delivered to the depacketiser, `foreign` (another port) or
  `foreign_ssrc`; a neighbour's datagram never reaches the depacketiser;
- the units it completes are well formed and within max_au_size, the depacketiser's store within its caps.
"""

from __future__ import annotations

import socket
import struct

from core_ext.depacketize import H264Depacketizer, H265Depacketizer
from core_ext.udprecv import UdpReceiver
from fuzz.targets import AU_CAPS, Reader, check_depacketizer_state, check_unit, fixture_packets

DRAIN_EVERY = 16  # datagrams between drains, and at most DRAIN_BYTES queued: under the receive buffer even where
DRAIN_BYTES = 64 * 1024  # net.core.rmem_max caps SO_RCVBUF at its default (~208 KiB, counted with overhead)
MAX_DATAGRAMS = 4096
SSRC = 0x11223344


class _Sockets:
    """One receiving socket and two senders on 127.0.0.1, made once per process (a fresh receiver per input)."""

    def __init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        self.camera = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.camera.bind(("127.0.0.1", 0))
        self.neighbour = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.neighbour.bind(("127.0.0.1", 0))
        self.address = self.rx.getsockname()

    def flush(self) -> None:
        """Empty the receive queue (an earlier input's leftovers would be miscounted)."""
        while True:
            try:
                self.rx.recv(1 << 16)
            except BlockingIOError:
                return


_SOCKETS: _Sockets | None = None


def sockets() -> _Sockets:
    global _SOCKETS
    if _SOCKETS is None:
        _SOCKETS = _Sockets()
    return _SOCKETS


def datagrams(data: bytes) -> tuple[int, bool, bool, list[tuple[bool, bytes]]]:
    """(max_au_size, h265, pinned, [(from the neighbour, datagram)]) an input stands for."""
    r = Reader(data)
    settings = r.u8()
    out: list[tuple[bool, bytes]] = []
    seq = ts = 0
    while r and len(out) < MAX_DATAGRAMS:
        op = r.u8()
        neighbour = op & 0x80 != 0
        if op & 0x40:  # raw bytes, as the input has them
            out.append((neighbour, r.take(r.u16() % 2048)))
            continue
        ssrc = SSRC if not op & 0x20 else int.from_bytes(r.take(4).ljust(4, b"\0"), "big")
        marker = 0x80 if op & 0x10 else 0
        seq = (seq + 1 + (r.u8() if op & 0x08 else 0)) & 0xFFFF
        ts = (ts + (3000 if marker else 0)) & 0xFFFFFFFF
        size = r.u16() % 1500 if not op & 0x04 else 1400 + r.u8() * 250  # up to ~65 KB: the slot's limit
        payload = r.take(size) if not op & 0x04 else b"\x7c\x85" + bytes(size)  # an FU-A of zeros when large
        out.append((neighbour, struct.pack("!BBHII", 0x80, marker | 96, seq, ts, ssrc) + payload))
    return AU_CAPS[settings & 3], bool(settings & 4), bool(settings & 8), out


def udp_datagrams(data: bytes) -> None:
    max_au_size, h265, pinned, grams = datagrams(data)
    s = sockets()
    s.flush()
    dep = H265Depacketizer(96, max_au_size=max_au_size) if h265 else H264Depacketizer(96, max_au_size=max_au_size)
    receiver = UdpReceiver(s.rx.fileno(), dep, "127.0.0.1")
    if pinned:
        receiver.pin(s.camera.getsockname()[1], SSRC)
    camera_port = s.camera.getsockname()[1]
    sent = queued = 0
    for neighbour, gram in grams:
        if sent % DRAIN_EVERY == 0 or queued + len(gram) > DRAIN_BYTES:
            _drain(receiver, max_au_size, dep.codec)
            queued = 0
        (s.neighbour if neighbour else s.camera).sendto(gram, s.address)
        sent += 1
        queued += len(gram)
    _drain(receiver, max_au_size, dep.codec)
    counted = receiver.datagrams + receiver.foreign + receiver.foreign_ssrc + receiver.oversized
    assert counted == sent, (receiver.as_dict(), sent)
    assert receiver.oversized == 0  # a UDP datagram fits a slot
    if receiver.source_port == camera_port:  # latched or pinned on the camera: the neighbour never got through
        assert receiver.foreign == sum(n for n, _ in grams), receiver.as_dict()
    assert dep.stats.packets == receiver.datagrams
    check_depacketizer_state(dep)
    receiver.close()


def _drain(receiver: UdpReceiver, max_au_size: int, codec: str) -> None:
    for unit in receiver.drain(limit=1 << 20):
        check_unit(unit, max_au_size, codec)


def seeds() -> list[bytes]:
    """The captured camera streams as camera datagrams, some from the neighbour, one pinned."""
    out = []
    for name, h265 in (("h264_multislice.bin", 0), ("h265.bin", 4), ("h264_sprop_only.bin", 0)):
        packets = fixture_packets(name)[:80]
        body = b"".join(bytes([0x40 | (0x80 if i % 7 == 3 else 0)]) + struct.pack("!H", len(p)) + p
                        for i, p in enumerate(packets))  # fmt: skip
        out.append(bytes([h265]) + body)
        out.append(bytes([h265 | 8]) + body)
    out.append(b"\x08\x14\x00\x10\x04\x01\x04\x05\x30\x00\x00\x00\x01\x00\x08")
    return out
