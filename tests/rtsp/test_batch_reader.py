"""The batch reader's fairness (issue 15 item 16): a camera that floods its TCP socket gets a bounded share of each
visit, so the other idle cameras' data is still read every interval. Real TCP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mediaserver.rtsp import batch_reader
from mediaserver.rtsp.batch_reader import MAX_READ, MAX_READS_PER_VISIT, BatchReader

INTERVAL = 0.2


class Client:
    """A batch_reader.BatchClient over one end of a TCP connection; records what each visit handed it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.visits: list[int] = []  # bytes per visit
        self.arrivals: list[float] = []
        self._visit_bytes = 0

    def watched(self) -> bool:
        if self._visit_bytes:  # called at the start of each visit: close the previous one
            self.visits.append(self._visit_bytes)
            self._visit_bytes = 0
        return False

    def batch_fileno(self) -> int:
        return self.sock.fileno()

    def batch_data(self, data: bytes) -> None:
        self._visit_bytes += len(data)
        self.arrivals.append(time.monotonic())

    def batch_error(self, exc: Exception | None) -> None:
        raise AssertionError(f"unexpected socket error {exc!r}")

    def leave_batch(self) -> None:
        pass


def connected_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        writer = socket.create_connection(listener.getsockname())
        reader, _ = listener.accept()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)  # room for many full reads per visit
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    reader.setblocking(False)
    return reader, writer


@pytest.fixture
def flood() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connection whose far end writes as fast as TCP takes it, from a thread."""
    reader, writer = connected_pair()
    stop = threading.Event()

    def write() -> None:
        block = bytes(1 << 20)
        while not stop.is_set():
            try:
                writer.sendall(block)
            except OSError:
                return

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    yield reader, writer
    stop.set()
    writer.close()
    thread.join(5)
    reader.close()


async def test_a_flooding_camera_does_not_starve_the_others(flood: tuple[socket.socket, socket.socket]) -> None:
    flooder = Client(flood[0])
    quiet = [connected_pair() for _ in range(3)]
    quiet_clients = [Client(reader) for reader, _ in quiet]
    batch = BatchReader(INTERVAL)
    batch_reader_slices = batch_reader.SLICES
    try:
        for client in [flooder, *quiet_clients]:
            batch.add(client)
        delays: list[float] = []
        for _ in range(10):  # a small message to each quiet camera, then how long until the reader hands it on
            sent = time.monotonic()
            seen = [len(c.arrivals) for c in quiet_clients]
            for _, writer in quiet:
                writer.sendall(b"x" * 1000)
            async with asyncio.timeout(5):
                while any(len(c.arrivals) == n for c, n in zip(quiet_clients, seen, strict=True)):
                    await asyncio.sleep(0.005)
            delays.append(time.monotonic() - sent)
    finally:
        await batch.close()
        for reader, writer in quiet:
            reader.close()
            writer.close()
    assert len(flooder.visits) >= 5 and sum(flooder.visits) > 5 * MAX_READ  # it did flood
    assert max(flooder.visits) <= MAX_READS_PER_VISIT * MAX_READ, max(flooder.visits)  # its share of a visit
    assert max(delays) < INTERVAL + INTERVAL / batch_reader_slices + 0.15, delays  # the others: one interval
