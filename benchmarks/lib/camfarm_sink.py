"""A cheap RTSP/TCP client for measuring the camera farm alone: it PLAYs many farm cameras and throws the
bytes away, reading every socket a few times a second (as the server's batched idle reads do), so the farm
sees the same per-frame writes as with a server without paying for one.

Not an RTSP client for anything else: it sends SETUP + PLAY blind (the farm needs no DESCRIBE) and counts
the bytes that come back, replies included.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

READ = 256 * 1024


@dataclass
class Sink:
    sockets: list[socket.socket] = field(default_factory=list)
    received: int = 0
    closed: int = 0  # sockets the farm closed (a dropping camera, or a farm that gave up on us)

    def connect(self, urls: Iterable[str]) -> None:
        for url in urls:
            host, port, path = _split(url)
            sock = socket.create_connection((host, port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.sendall(_setup_play(url, path))
            sock.setblocking(False)
            self.sockets.append(sock)

    def drain(self) -> None:
        """Read every socket until it is empty."""
        for sock in self.sockets:
            fd = sock.fileno()
            if fd < 0:
                continue
            while True:
                try:
                    data = os.read(fd, READ)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    sock.close()
                    self.closed += 1
                    break
                self.received += len(data)
                if len(data) < READ:
                    break

    def run(self, seconds: float, interval: float = 0.1) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            self.drain()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _split(url: str) -> tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port), "/" + path


def _setup_play(url: str, path: str) -> bytes:
    setup = f"SETUP {url}/track1 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    play = f"PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: sink\r\n\r\n"
    return (setup + play).encode()
