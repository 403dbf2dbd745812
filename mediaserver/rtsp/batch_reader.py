"""Batched reads for cameras nobody watches: one timer per worker instead of one wake-up per packet.

A camera with no viewer only fills its GOP cache, so nothing is lost by reading it a few times a second: when a
viewer comes, the hub has it read at once (`read_now` before its GOP is taken, `go_live` when it subscribes).
Its transport is paused (taken off epoll once, not per read) and a `BatchReader` reads its socket directly
every `interval` seconds until the socket is empty or the camera's share of the visit (`MAX_READS_PER_VISIT`
reads) is used, so one read carries many packets and a flooding camera can't starve the others; the cameras are
spread over `SLICES` ticks per interval, so the work comes in small even slices, not one burst. A camera
that gains a viewer leaves the batch at the next tick and is read on every packet again (live latency is
untouched); when its last viewer leaves it rejoins.

Why not `pause_reading()` + a timer per read: each pause/resume is an epoll_ctl pair, which costs about what
the saved reads did (measured: no CPU gain). Here a steady idle camera costs one read(2) per interval.

RTP over UDP takes part as a `DatagramClient`: a plain read would take one datagram and lose its source
address, so each tick drains every UDP camera of its slice in one call into C (core_ext/udprecv.pyx: one
recvmmsg(2) per camera, datagrams straight into its depacketiser), and Python is entered only for the cameras
whose units its hub's GOP cache did not take in C (core_ext/gop.pyx: a steady unwatched camera never enters Python).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Protocol

from core_ext.depacketize import AccessUnit
from core_ext.udprecv import UdpReceiver, drain_each

log = logging.getLogger(__name__)

SLICES = 8
MAX_READ = 256 * 1024
# A camera's share of one visit: 1 MiB per interval (40 Mbit/s at 200 ms, above any CCTV stream). What is left
# stays in its socket for the next visit (TCP then slows the camera down), instead of holding up its slice.
MAX_READS_PER_VISIT = 4
# The server's default interval. A viewer never waits for it (Hub.gop() reads a batched camera first and a new
# consumer takes it live at once), so it trades only CPU (a visit per camera per interval) against socket buffer
# memory (bitrate x interval per camera: ~11 KB at 0.45 Mbit/s; rtsp/client.py warns if UDP buffers are capped).
IDLE_READ_MS = 200.0


class BatchClient(Protocol):
    def watched(self) -> bool:
        """A viewer needs this camera live: stop batching it."""
        ...

    def batch_fileno(self) -> int: ...
    def batch_data(self, data: bytes) -> None: ...
    def batch_error(self, exc: Exception | None) -> None:
        """The socket reached EOF (None) or failed."""
        ...

    def leave_batch(self) -> None:
        """Called by the reader when the client is dropped for going live (resume event-driven reads)."""
        ...


class DatagramClient(Protocol):
    @property
    def receiver(self) -> UdpReceiver:
        """Its socket's receiver; `receiver.owner` is this client."""
        ...

    def batch_units(self, units: list[AccessUnit]) -> bool:
        """Hand on what a drain completed; returns whether a viewer now needs the camera live (leave the batch)."""
        ...

    def batch_error(self, exc: Exception | None) -> None: ...
    def leave_batch(self) -> None: ...


class BatchReader:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slices: list[set[BatchClient]] = [set() for _ in range(SLICES)]
        self._datagram_slices: list[set[UdpReceiver]] = [set() for _ in range(SLICES)]  # owners: DatagramClient
        self._next = 0
        self._task: asyncio.Task[None] | None = None
        self.reads = 0  # read(2) calls on stream sockets (datagram clients count their own)

    def add(self, client: BatchClient) -> None:
        self._slices[self._emptiest()].add(client)
        self._start()

    def add_datagram(self, client: DatagramClient) -> None:
        self._datagram_slices[self._emptiest()].add(client.receiver)
        self._start()

    def _emptiest(self) -> int:
        return min(range(SLICES), key=lambda i: len(self._slices[i]) + len(self._datagram_slices[i]))

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-reader")

    def discard(self, client: BatchClient) -> None:
        for members in self._slices:
            members.discard(client)

    def discard_datagram(self, client: DatagramClient) -> None:
        for members in self._datagram_slices:
            members.discard(client.receiver)

    def read_now(self, client: BatchClient) -> None:
        """Read a stream client's socket at once (a viewer is about to take its GOP), not at its next tick."""
        for members in self._slices:
            if client in members:
                self._serve_guarded(members, client)
                return

    def __len__(self) -> int:
        return sum(len(s) for s in self._slices) + sum(len(s) for s in self._datagram_slices)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval / SLICES)
            members, datagram_members = self._slices[self._next], self._datagram_slices[self._next]
            self._next = (self._next + 1) % SLICES
            for client in tuple(members):
                if client in members:  # an earlier client's callback may have dropped it
                    self._serve_guarded(members, client)
            if datagram_members:
                self._serve_datagrams(datagram_members)

    @staticmethod
    def _serve_datagrams(members: set[UdpReceiver]) -> None:
        for receiver, result in drain_each(members):  # no Python runs until every socket of the slice is read
            if receiver not in members:
                continue  # an earlier camera's units closed this one
            client: DatagramClient = receiver.owner
            try:
                if isinstance(result, Exception):
                    raise result
                if client.batch_units(result):
                    members.discard(receiver)
                    client.leave_batch()
            except Exception as exc:  # a socket error or a bug: this camera reconnects, the others are read on
                if not isinstance(exc, OSError):
                    log.exception("batched datagram read failed")
                members.discard(receiver)
                client.batch_error(exc)

    def _serve_guarded(self, members: set[BatchClient], client: BatchClient) -> None:
        try:
            self._serve(members, client)
        except Exception as exc:  # one camera's bug costs it a reconnect, never the others' reads
            log.exception("batched read failed")
            members.discard(client)
            client.batch_error(exc)

    def _serve(self, members: set[BatchClient], client: BatchClient) -> None:
        if client.watched():
            members.discard(client)
            client.leave_batch()
            return
        fd = client.batch_fileno()
        for _ in range(MAX_READS_PER_VISIT):
            try:
                data = os.read(fd, MAX_READ)
            except BlockingIOError:
                return
            except OSError as exc:
                members.discard(client)
                client.batch_error(exc)
                return
            self.reads += 1
            if not data:
                members.discard(client)
                client.batch_error(None)
                return
            client.batch_data(data)
            if len(data) < MAX_READ or client not in members:
                return  # a short read emptied the socket: save the read that would say EAGAIN
