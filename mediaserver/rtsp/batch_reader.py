"""Batched reads for cameras nobody watches: one timer per worker instead of one wake-up per packet.

A camera with no viewer only fills its GOP cache, so nothing is lost by reading it a few times a second.
Its transport is paused (taken off epoll once, not per read) and a `BatchReader` reads its socket directly
every `interval` seconds until the socket is empty, so one read carries many packets; the cameras are
spread over `SLICES` ticks per interval, so the work comes in small even slices, not one burst. A camera
that gains a viewer leaves the batch at the next tick and is read on every packet again (live latency is
untouched); when its last viewer leaves it rejoins.

Why not `pause_reading()` + a timer per read: each pause/resume is an epoll_ctl pair, which costs about what
the saved reads did (measured: no CPU gain). Here a steady idle camera costs one read(2) per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Protocol

log = logging.getLogger(__name__)

SLICES = 8
MAX_READ = 256 * 1024


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


class BatchReader:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slices: list[set[BatchClient]] = [set() for _ in range(SLICES)]
        self._next = 0
        self._task: asyncio.Task[None] | None = None
        self.reads = 0

    def add(self, client: BatchClient) -> None:
        self._slices[min(range(SLICES), key=lambda i: len(self._slices[i]))].add(client)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-reader")

    def discard(self, client: BatchClient) -> None:
        for members in self._slices:
            members.discard(client)

    def __len__(self) -> int:
        return sum(len(s) for s in self._slices)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval / SLICES)
            members = self._slices[self._next]
            self._next = (self._next + 1) % SLICES
            for client in tuple(members):
                if client in members:  # an earlier client's callback may have dropped it
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
        while True:
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
