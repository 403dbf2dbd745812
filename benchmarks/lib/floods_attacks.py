"""The attacks of floods.py (issue 13 item 3), each `async def attack(target, seconds, **options) -> figures`,
run while `Target` (floods_target.py) keeps measuring its viewer and /healthz. Everything goes to 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import random
import re
import socket
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
from helpers.peers import rtsp_answer

from lib.floods_target import Target, add_camera, camera_on, remove_camera


async def baseline(t: Target, seconds: float) -> dict[str, Any]:
    """No attack: what the machine gives the viewer and the probe anyway (the other rows' reference)."""
    await asyncio.sleep(seconds)
    return {}


# --- the HTTP front --------------------------------------------------------------------------------------


async def slowloris(t: Target, seconds: float, connections: int = 1000, every: float = 1.0) -> dict[str, Any]:
    """`connections` requests whose headers come one byte every `every` s: how long the server holds them."""
    start = time.monotonic()
    closed: list[float] = []

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{t.port}\r\n".encode())
            header = f"X-Slow-{n}: " + "a" * 100_000
            for ch in header:
                writer.write(ch.encode())
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every):
                        if await reader.read(65536) == b"" or reader.at_eof():
                            closed.append(time.monotonic() - start)
                            return
        except (ConnectionError, OSError):
            closed.append(time.monotonic() - start)
        finally:
            writer.close()

    tasks = [asyncio.create_task(one(n)) for n in range(connections)]
    _done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"connections": connections, "closed_by_server": len(closed), "held_to_end": connections - len(closed),
            "first_close_s": round(min(closed), 1) if closed else None,
            "last_close_s": round(max(closed), 1) if closed else None}  # fmt: skip


async def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 10) -> tuple[int | None, bool, float]:
    """(status, whether the server closed the connection within `timeout`, seconds until it did): one request
    on its own connection, its body sent on while the server reads it."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status: int | None = None
    closed = False
    sender = asyncio.create_task(_send(writer, head + body))
    try:
        async with asyncio.timeout(timeout):
            line = await reader.readline()
            if m := re.match(rb"HTTP/1\.[01] (\d{3})", line):
                status = int(m.group(1))
            while await reader.read(65536):
                pass
            closed = True
    except ConnectionError:
        closed = True
    except TimeoutError:
        pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return status, closed, time.monotonic() - t0


async def _send(writer: asyncio.StreamWriter, body: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        for i in range(0, len(body), 65536):
            writer.write(body[i : i + 65536])
            await writer.drain()


def oversized_cases(port: int, token: str) -> dict[str, tuple[bytes, bytes]]:
    host = f"Host: 127.0.0.1:{port}\r\n"
    big = 10 * 2**20
    return {
        "64 KiB header line": (f"GET /healthz HTTP/1.1\r\n{host}X-Big: {'a' * 65536}\r\n\r\n".encode(), b""),
        "64 KiB request line": (f"GET /healthz?{'a' * 65536} HTTP/1.1\r\n{host}\r\n".encode(), b""),
        "1,000 headers": (
            ("GET /healthz HTTP/1.1\r\n" + host + "".join(f"X-{n}: a\r\n" for n in range(1000)) + "\r\n").encode(),
            b"",
        ),
        "WHEP offer 10 MB": (
            f"POST /whep/{t_camera(port)} HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {big}\r\n\r\n".encode(),
            b"v=0\r\n" + b"a" * (big - 5),
        ),
        "WHEP offer 10 MB chunked": (
            f"POST /whep/{t_camera(port)} HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\n"
            "Content-Type: application/sdp\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
            b"".join(b"10000\r\n" + b"a" * 65536 + b"\r\n" for _ in range(160)) + b"0\r\n\r\n",
        ),
        "slow body (10 of 1,000 bytes, then silence)": (
            f"POST /whep/{t_camera(port)} HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\n"
            "Content-Type: application/sdp\r\nContent-Length: 1000\r\n\r\n".encode(),
            b"v=0\r\na=x\r\n",
        ),
        "JSON 10 MB": (
            f"POST /api/incidents HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {big}\r\n\r\n".encode(),
            b'{"a": "' + b"a" * (big - 9) + b'"}',
        ),
        "JSON 10 MB to the token endpoint": (
            f"POST /oauth/token HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
            f"Content-Length: {big}\r\n\r\n".encode(),
            b'{"a": "' + b"a" * (big - 9) + b'"}',
        ),
    }


_CAMERAS: dict[int, str] = {}


def t_camera(port: int) -> str:
    return _CAMERAS.get(port, "view-0")


async def oversized(t: Target, seconds: float, rounds: int = 0) -> dict[str, Any]:
    """Each oversized request over and over for `seconds`: its statuses, whether the connection closed, the
    slowest answer, and the server's RSS before and after."""
    _CAMERAS[t.port] = t.camera
    rss_before = t.rss_mib()
    cases = oversized_cases(t.port, t.tokens[-1])
    out: dict[str, dict[str, Any]] = {name: {"status": Counter(), "closed": 0, "max_s": 0.0} for name in cases}
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and (not rounds or n < rounds):
        for name, (head, body) in cases.items():
            status, closed, took = await raw_request(t.port, head, body, timeout=15)
            row = out[name]
            row["status"][str(status)] += 1
            row["closed"] += closed
            row["max_s"] = round(max(row["max_s"], took), 2)
        n += 1
    return {"rounds": n, "cases": {k: {**v, "status": dict(v["status"])} for k, v in out.items()},
            "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(t.rss_mib(), 1)}  # fmt: skip


# --- WHEP offers and refusals -----------------------------------------------------------------------------


async def _offers(t: Target, seconds: float, rate: float, tokens: list[str]) -> dict[str, Any]:
    offer = await _an_offer()
    statuses: Counter[str] = Counter()
    locations: list[str] = []
    start = time.monotonic()
    sent = 0

    async def post(http: aiohttp.ClientSession, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        try:
            async with asyncio.timeout(10), http.post(f"/whep/{t.camera}", data=offer, headers=headers) as res:
                await res.read()
                statuses[str(res.status)] += 1
                if res.status == 201:
                    locations.append(res.headers["Location"])
        except (aiohttp.ClientError, TimeoutError) as e:
            statuses[type(e).__name__] += 1

    async with aiohttp.ClientSession(t.base, connector=aiohttp.TCPConnector(limit=64)) as http:
        tasks: list[asyncio.Task[None]] = []
        while (elapsed := time.monotonic() - start) < seconds:
            while sent < elapsed * rate:
                tasks.append(asyncio.create_task(post(http, tokens[sent % len(tokens)])))
                sent += 1
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        took = time.monotonic() - start
        for location in locations:  # the flood's sessions go, so the next attack starts clean
            with contextlib.suppress(aiohttp.ClientError):
                async with http.delete(location, headers={"Authorization": f"Bearer {tokens[0]}"}):
                    pass
    return {"offers": sent, "per_s": round(sent / took), "tokens": len(tokens), "status": dict(statuses)}


_OFFER: list[str] = []


async def _an_offer() -> str:
    """One real aiortc offer, reused by every flooding request (the server's parse and answer are the cost)."""
    if not _OFFER:
        from helpers.viewers import Viewer

        viewer = Viewer()
        _OFFER.append(await viewer.offer())
        await viewer.pc.close()
    return _OFFER[0]


async def whep_flood_one_token(t: Target, seconds: float, rate: float = 100) -> dict[str, Any]:
    return await _offers(t, seconds, rate, t.tokens[1:2])


async def whep_flood_agency(t: Target, seconds: float, rate: float = 100) -> dict[str, Any]:
    return await _offers(t, seconds, rate, t.tokens[1:])


DENIALS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("POST", "/whep/{camera}", {"Content-Type": "application/sdp"}),
    ("POST", "/whep/{camera}", {"Authorization": "Bearer not-a-token", "Content-Type": "application/sdp"}),
    ("GET", "/api/cameras/{camera}/snapshot", {}),
    ("GET", "/api/audit", {"Authorization": "Basic bm8tc3VjaDpjbGllbnQ="}),
    ("GET", "/api/cameras/{camera}/status", {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}),
)


def audit_rows(db: str) -> dict[str, int]:
    """Audit records by event, read from the database (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        return dict(conn.execute("SELECT event, count(*) FROM audit GROUP BY event").fetchall())


async def denial_flood(
    t: Target, seconds: float, requests: int = 10_000, concurrency: int = 32, summary_wait: float = 11
) -> dict[str, Any]:
    """`requests` unauthenticated or forged calls (as fast as they go; `seconds` is unused), then `summary_wait`
    for the refusal summaries (one per source per 10 s): statuses, the audit's growth."""
    before = audit_rows(t.db)
    rss_before = t.rss_mib()
    statuses: Counter[str] = Counter()
    queue = iter(range(requests))
    start = time.monotonic()

    async def worker(http: aiohttp.ClientSession) -> None:
        for n in queue:
            method, path, headers = DENIALS[n % len(DENIALS)]
            try:
                async with http.request(method, path.format(camera=t.camera), data=b"v=0\r\n", headers=headers) as res:
                    await res.read()
                    statuses[str(res.status)] += 1
            except aiohttp.ClientError as e:
                statuses[type(e).__name__] += 1

    async with aiohttp.ClientSession(t.base, connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        await asyncio.wait_for(asyncio.gather(*(worker(http) for _ in range(concurrency))), 120)
    took = time.monotonic() - start
    await asyncio.sleep(summary_wait)
    after = audit_rows(t.db)
    growth = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    return {"requests": requests, "per_s": round(requests / took), "status": dict(statuses),
            "audit_records_added": growth, "rss_before_mib": round(rss_before, 1),
            "rss_after_mib": round(t.rss_mib(), 1)}  # fmt: skip


# --- the media ports ---------------------------------------------------------------------------------------


def media_port(answer: str) -> int:
    """The server's UDP port for this session: the host candidate in its answer."""
    m = re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", answer)
    if not m:
        raise ValueError(f"no 127.0.0.1 host candidate in the answer: {answer}")
    return int(m.group(1))


def stun_garbage(rng: random.Random) -> bytes:
    """Malformed STUN: the magic cookie with lying lengths, unknown and truncated attributes, bogus
    USERNAME/MESSAGE-INTEGRITY; or a DTLS-looking record; or random bytes."""
    kind = rng.randrange(4)
    if kind == 0:  # Binding request, length that lies
        attrs = rng.randbytes(rng.randrange(0, 200))
        return struct.pack("!HHI", 0x0001, rng.randrange(65536), 0x2112A442) + rng.randbytes(12) + attrs
    if kind == 1:  # well-formed header, USERNAME + bogus MESSAGE-INTEGRITY + FINGERPRINT
        user = rng.randbytes(rng.randrange(1, 64))
        attrs = struct.pack("!HH", 0x0006, len(user)) + user + b"\0" * (-len(user) % 4)
        attrs += (
            struct.pack("!HH", 0x0008, 20) + rng.randbytes(20) + struct.pack("!HHI", 0x8028, 4, rng.getrandbits(32))
        )
        return (
            struct.pack("!HHI", rng.choice((0x0001, 0x0101, 0x0111)), len(attrs), 0x2112A442)
            + rng.randbytes(12)
            + attrs
        )
    if kind == 2:  # DTLS record: handshake / alert / application data, epoch and length random
        body = rng.randbytes(rng.randrange(0, 300))
        return (
            bytes([rng.choice((20, 21, 22, 23))])
            + b"\xfe\xfd"
            + rng.randbytes(8)
            + struct.pack("!H", rng.randrange(65536))
            + body
        )
    return rng.randbytes(rng.randrange(1, 1400))


def _blast(port: int, seconds: float, rate: float, sent: Any) -> None:
    rng = random.Random(13)
    datagrams = [stun_garbage(rng) for _ in range(4096)]
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        n = 0
        while (elapsed := time.monotonic() - start) < seconds:
            if n >= elapsed * rate:
                time.sleep(0.001)
                continue
            with contextlib.suppress(OSError):
                sock.send(datagrams[n % len(datagrams)])
            n += 1
    sent.value = n


async def media_garbage(t: Target, seconds: float, rate: float = 20_000) -> dict[str, Any]:
    """Random datagrams, malformed STUN and DTLS-looking records at the viewer's server port, from a child
    process (the measuring viewer keeps this one)."""
    port = media_port(t.answer)
    ctx = multiprocessing.get_context("fork")
    sent = ctx.Value("q", 0)
    proc = ctx.Process(target=_blast, args=(port, seconds, rate, sent), daemon=True)
    proc.start()
    await asyncio.to_thread(proc.join, seconds + 10)
    return {"port": port, "datagrams": sent.value, "per_s": round(sent.value / seconds)}


# --- hostile cameras -----------------------------------------------------------------------------------------


class HostileCamera:
    """A raw TCP RTSP camera in a child process of its own (so that its sending competes with the server for
    the CPU, not with the measuring viewer for this process's GIL): `mode` "garbage" answers the handshake,
    then `$`-frames random bytes at `mbit` Mbit/s; "trickle" answers every request one byte every `every` s."""

    def __init__(self, mode: str, mbit: float = 100, every: float = 1.0) -> None:
        self.mode, self.mbit, self.every = mode, mbit, every
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rtsp://127.0.0.1:{self._listener.getsockname()[1]}/cam"
        ctx = multiprocessing.get_context("fork")  # the child runs plain sockets only
        self._sent = ctx.Value("q", 0)
        self._accepted = ctx.Array("d", 256)  # monotonic time of each accepted connection (first 256)
        self._count = ctx.Value("i", 0)
        self._flood_s = ctx.Value("d", 0.0)  # time spent flooding (connected, after PLAY)
        self._proc = ctx.Process(target=self._run, daemon=True)
        self._proc.start()
        self._listener.close()

    @property
    def connections(self) -> list[float]:
        return list(self._accepted[: min(self._count.value, 256)])

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    @property
    def flood_s(self) -> float:
        return float(self._flood_s.value)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.join(5)

    def _run(self) -> None:
        while True:
            conn, _ = self._listener.accept()
            with self._count.get_lock():
                if self._count.value < 256:
                    self._accepted[self._count.value] = time.monotonic()
                self._count.value += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _requests(self, conn: socket.socket) -> Iterator[str]:
        buf = b""
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                buf = rest
                yield head.decode(errors="replace")
                continue
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(30)
            for request in self._requests(conn):
                answer = rtsp_answer(request, self.url)
                if self.mode == "trickle":
                    for i in range(len(answer)):
                        time.sleep(self.every)
                        conn.sendall(answer[i : i + 1])
                    continue
                conn.sendall(answer)
                if request.startswith("PLAY"):
                    self._flood(conn)
                    return

    def _flood(self, conn: socket.socket) -> None:
        noise = random.Random(4)
        block = b"".join(b"$\x00" + struct.pack("!H", 1400) + bytes([noise.randrange(0x40)]) + noise.randbytes(1399)
                         for _ in range(64))  # fmt: skip
        per_s = self.mbit * 1e6 / 8
        start, sent = time.monotonic(), 0
        try:
            while True:
                ahead = sent / per_s - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                conn.sendall(block)
                sent += len(block)
                with self._sent.get_lock():
                    self._sent.value += len(block)
        finally:
            with self._flood_s.get_lock():
                self._flood_s.value += time.monotonic() - start


async def camera_status(t: Target, camera: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(t.base) as http,
        http.get(f"/api/cameras/{camera}/status", headers={"Authorization": f"Bearer {t.tokens[0]}"}) as res,
    ):
        return dict(await res.json()) if res.status == 200 else {"http": res.status}


async def _with_camera(t: Target, seconds: float, camera: HostileCamera, prefix: str) -> dict[str, Any]:
    camera_id = camera_on(0, prefix)  # the watched camera's worker: the one that must not be hurt
    add_camera(t.db, camera_id, camera.url)
    try:
        await asyncio.sleep(seconds)
        status = await camera_status(t, camera_id)
    finally:
        remove_camera(t.db, camera_id)
        await asyncio.sleep(2)  # the worker drops the camera: the flood's connection ends and is counted
        camera.close()
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(camera.connections)]
    return {"camera": camera_id, "connections": len(camera.connections), "reconnect_gaps_s": gaps,
            "mbit_per_s_flooding": round(camera.sent * 8 / 1e6 / camera.flood_s, 1) if camera.flood_s else 0.0,
            "flooding_s": round(camera.flood_s, 1), "state": status.get("state"), "errors": status.get("errors"),
            "last_error": status.get("last_error"), "units": status.get("units")}  # fmt: skip


async def garbage_camera(t: Target, seconds: float, mbit: float = 100) -> dict[str, Any]:
    """A camera on the viewer's worker that streams `$`-framed garbage at `mbit` Mbit/s."""
    return await _with_camera(t, seconds, HostileCamera("garbage", mbit), "garbage")


async def trickle_camera(t: Target, seconds: float, every: float = 1.0) -> dict[str, Any]:
    """A camera on the viewer's worker that answers RTSP one byte every `every` s."""
    return await _with_camera(t, seconds, HostileCamera("trickle", every=every), "trickle")


ATTACKS: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    baseline, slowloris, oversized, whep_flood_one_token, whep_flood_agency, media_garbage, garbage_camera,
    trickle_camera, denial_flood)}  # fmt: skip
