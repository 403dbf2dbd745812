"""A hostile camera that answers RTSP properly, then streams `$`-framed garbage RTP as fast as TCP takes it
(issue 15 item 1): bytes keep arriving, no access unit ever completes. The stall watchdog judges progress by
complete units, so the session is declared stalled and reconnects within the stall timeout, and the worker's
event loop stays responsive meanwhile, whether the camera is read live or by the batch reader."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from helpers.peers import rtsp_answer
from test_ingest import wait_for

from mediaserver.hub import Hub
from mediaserver.ingest import CameraIngest
from mediaserver.rtsp.batch_reader import BatchReader
from mediaserver.rtsp.client import Source, Timeouts
from mediaserver.rtsp.errors import ErrorKind
from mediaserver.rtsp.reconnect import Backoff, RateLimiter


class GarbageCamera:
    """Blocking sockets in threads, so the flood competes with the client for the CPU, not for its event loop."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rtsp://127.0.0.1:{self._listener.getsockname()[1]}/cam"
        self.connections = 0
        self.garbage_bytes = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                buf = b""
                while True:
                    head, sep, rest = buf.partition(b"\r\n\r\n")
                    if not sep:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        buf += chunk
                        continue
                    buf = rest
                    conn.sendall(rtsp_answer(head.decode(), self.url))
                    if head.startswith(b"PLAY"):
                        break
                self._flood(conn)
            except OSError:
                return

    def _flood(self, conn: socket.socket) -> None:
        """Valid `$` frames on the RTP channel, their payloads RTP version 0: counted, never a unit."""
        noise = random.Random(15)
        block = b"".join(
            b"$\x00" + struct.pack("!H", len(payload)) + payload
            for payload in (bytes([noise.randrange(0x40)]) + noise.randbytes(1399) for _ in range(64))
        )
        while not self._stop.is_set():
            conn.sendall(block)
            self.garbage_bytes += len(block)


@pytest.fixture
def garbage_camera() -> Iterator[GarbageCamera]:
    camera = GarbageCamera()
    yield camera
    camera.close()


async def max_lag_while(done: asyncio.Future[None]) -> float:
    """The event loop's worst lateness for a 10 ms sleep until `done`."""
    worst = 0.0
    while not done.done():
        start = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - start - 0.01)
    return worst


@pytest.mark.parametrize("batched", [False, True], ids=["live", "batched"])
async def test_garbage_fast_is_a_stall_not_progress(garbage_camera: GarbageCamera, batched: bool) -> None:
    stall = 1.5
    timeouts = Timeouts(connect=2, response=2, stall=stall, first_keyframe=60)  # only the stall rule may fire
    batch = BatchReader(0.2) if batched else None
    ingest = CameraIngest(
        Hub("hostile"), Source(garbage_camera.url), RateLimiter(100), timeouts, Backoff(0.05, 0.1), batch=batch
    )
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    lag = asyncio.create_task(max_lag_while(done))
    ingest.start()
    try:
        await wait_for(lambda: ingest.connects >= 1, 5)
        started = time.monotonic()
        await wait_for(lambda: ingest.errors[ErrorKind.STALLED] >= 1, stall + 3)
        stalled_after = time.monotonic() - started
        await wait_for(lambda: garbage_camera.connections >= 2, 3)  # and it reconnected
    finally:
        done.set_result(None)
        await ingest.stop()
        if batch is not None:
            await batch.close()
    worst = await asyncio.wait_for(lag, 2)
    assert garbage_camera.garbage_bytes > 1_000_000  # bytes did keep coming
    assert stalled_after <= stall + 1.0, stalled_after  # a watchdog tick or two past the timeout
    assert ingest.hub.units == 0 and set(ingest.errors) == {ErrorKind.STALLED}, ingest.status()
    assert worst < 0.25, worst  # the flood never held the loop
