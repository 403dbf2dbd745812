"""RTP over UDP for one session: the socket pair (RTP + RTCP), and who reads the RTP socket when.

A non-blocking socket drained with recvmmsg(2) into the depacketiser (core_ext/udprecv.pyx), so a wake-up takes
every datagram queued, not one. While the camera is watched the event loop calls us when the socket is readable;
while nobody watches we leave the loop's epoll set and the batch reader drains us a few times a second
(batch_reader.DatagramClient), one recvmmsg per tick for a steady camera. Datagrams from anyone but the camera
(address, RTP source port, SSRC: pinned from SETUP by `pin`) are counted and dropped in C. Units the sink's C
cache takes never come back to Python (mediaserver/sink.py); the rest go to `on_unit`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable

from core_ext.depacketize import AccessUnit, H264Depacketizer, H265Depacketizer
from core_ext.gop import GopCache
from core_ext.udprecv import UdpReceiver
from mediaserver.rtsp.batch_reader import BatchReader
from mediaserver.rtsp.errors import ErrorKind, RtspError

log = logging.getLogger("goldentime.rtsp")

# Asked of the kernel for an RTP socket (it doubles it; net.core.rmem_max caps it): room for a batched read's
# interval of a high-bitrate camera plus its keyframe burst, which the 208 KiB default does not always have.
UDP_RCVBUF = 1024 * 1024


class UdpRtp:
    def __init__(
        self,
        sock: socket.socket,
        receiver: UdpReceiver,
        on_unit: Callable[[AccessUnit], None],
        watched: Callable[[], bool],
        failed: Callable[[Exception | None], None],
        batch: BatchReader | None,
    ) -> None:
        self._sock = sock
        self.fd = sock.fileno()
        self.receiver = receiver
        receiver.owner = self
        self._on_unit = on_unit
        self._watched = watched  # the ingest's own check: one call less per tick
        self._failed = failed
        self._batch = batch
        self._loop = asyncio.get_running_loop()
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self._reading = False  # registered with the event loop
        self._batched = False
        self._closed = False

    def start(self) -> None:
        self._loop.add_reader(self.fd, self._readable)
        self._reading = True

    def pin(self, port: int | None, ssrc: int | None) -> None:
        """Accept RTP only from SETUP's `server_port` and `ssrc` (each None: the first seen is latched)."""
        self.receiver.pin(port, ssrc)

    @property
    def input_count(self) -> int:
        """Datagrams read from the socket, the camera's or not (the watchdog's 'bytes came' measure)."""
        r = self.receiver
        return r.datagrams + r.foreign + r.foreign_ssrc + r.oversized

    def _readable(self) -> None:
        try:
            self._drain()
        except Exception as exc:  # the socket failed (or a bug): this camera reconnects, nothing else notices
            self._stop_reading()
            self._failed(exc)
            return
        if self._batch is not None and not self._watched():
            self._stop_reading()
            self._batched = True
            self._batch.add_datagram(self)

    def _drain(self) -> None:
        for unit in self.receiver.drain():
            self._on_unit(unit)

    # --- sink.CatchUp, through the session ---
    def read_now(self) -> None:
        if not self._batched:
            return  # read by the event loop as packets come
        try:
            self._drain()
        except Exception as exc:  # off the batch, then this camera reconnects
            if self._batch is not None:
                self._batch.discard_datagram(self)
            self.batch_error(exc)

    def go_live(self) -> None:
        if self._batched and self._batch is not None:
            self._batch.discard_datagram(self)
            self.leave_batch()

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    # --- batch_reader.DatagramClient ---
    def batch_units(self, units: list[AccessUnit]) -> bool:
        for unit in units:
            self._on_unit(unit)
        return self._watched()

    def batch_error(self, exc: Exception | None) -> None:
        self._batched = False
        self._failed(exc)

    def leave_batch(self) -> None:
        self._batched = False
        if not self._closed:
            self.start()

    def close(self) -> None:
        """Leave the batch and the event loop before the fd closes: nobody may read a reused fd."""
        self._closed = True
        if self._batched and self._batch is not None:
            self._batch.discard_datagram(self)
            self._batched = False
        self._stop_reading()
        self.receiver.close()
        self.receiver.owner = None  # no cycle left for the garbage collector
        self._sock.close()


async def open_rtp(
    local_ip: str,
    camera_ip: str,
    depacketizer: H264Depacketizer | H265Depacketizer,
    cache: GopCache | None,
    on_unit: Callable[[AccessUnit], None],
    watched: Callable[[], bool],
    failed: Callable[[Exception | None], None],
    batch: BatchReader | None,
) -> tuple[UdpRtp, asyncio.DatagramTransport, int]:
    """Bind an even RTP port and the next one for RTCP on the address that reaches the camera; start reading."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
    for _ in range(20):
        port = random.randrange(20000, 65000, 2)
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((local_ip, port))
            rtcp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(local_ip, port + 1))
        except OSError:
            rtp.close()
            continue
        rtp.setblocking(False)
        _set_rcvbuf(rtp)
        receiver = UdpReceiver(rtp.fileno(), depacketizer, camera_ip, cache=cache)
        reader = UdpRtp(rtp, receiver, on_unit, watched, failed, batch)
        reader.start()
        return reader, rtcp, port
    raise RtspError(ErrorKind.UDP_PORTS, "no free UDP port pair")


def parse_ssrc(value: str) -> int | None:
    """Transport `ssrc=` is 8 hex digits (RFC 2326 12.39); anything else: None (the first SSRC seen is latched)."""
    try:
        ssrc = int(value, 16)
    except ValueError:
        return None
    return ssrc if 0 <= ssrc <= 0xFFFFFFFF else None


_capped_warned = False


def _set_rcvbuf(sock: socket.socket) -> None:
    global _capped_warned
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # doubled by the kernel for its bookkeeping
    if got < 2 * UDP_RCVBUF and not _capped_warned:
        _capped_warned = True
        log.warning(
            "UDP receive buffers are capped at %d KiB (net.core.rmem_max): a high-bitrate camera read in batches "
            "may lose packets between reads; raise net.core.rmem_max to %d or lower --idle-read-ms",
            got // 1024,
            UDP_RCVBUF,
        )
