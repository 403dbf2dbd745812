"""The server under attack for floods.py and tests/test_floods.py (both put tests/ on sys.path): a registry with
one watched camera, an agency client with an incident around it and stream tokens, `mediaserver serve` as a real
process, and a decoding viewer on the camera; plus the probe that records what the attacks cost (viewer frames, /healthz
latency, RSS of the server's processes) per phase."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from helpers.access import FAST, agency, incident_around
from helpers.serve_process import serve, wait_ready
from helpers.viewers import DecodingViewer

from lib.camfarm_measure import memory, tree
from mediaserver.cluster.hashring import worker_index, worker_ring
from mediaserver.registry import Registry, make_camera
from signaling.access import Access

ROOT = Path(__file__).resolve().parents[2]
LAT, LON = 37.5663, 126.9779
WORKERS = 2


def camera_on(worker: int, prefix: str, workers: int = WORKERS) -> str:
    """A camera id that the hash ring gives to `worker`."""
    ring = worker_ring(workers)
    return next(f"{prefix}-{n}" for n in range(10_000) if worker_index(ring, f"{prefix}-{n}") == worker)


async def _no_sessions(session_id: str) -> None:
    pass


def prepare(db: str, camera_url: str, tokens: int) -> tuple[str, list[str]]:
    """Register the watched camera (on worker 0) and mint `tokens` stream tokens of one agency client whose
    incident covers the spot; (camera id, tokens)."""
    camera = camera_on(0, "view")
    registry = Registry(db)
    registry.upsert([make_camera(camera, camera, "Jung-gu", LAT, LON, camera_url)])
    points = [c.public() for c in registry.list()]
    registry.close()
    access = Access(db, _no_sessions, lambda: points, FAST)
    try:
        client, _ = agency(access, "police-112")
        access.refresh_cameras()
        incident = incident_around(access, client, LON, LAT, 50)
        minted = [access.issue_stream_token(incident, client, f"officer {n}", None, "127.0.0.1")[0]
                  for n in range(tokens)]  # fmt: skip
    finally:
        access.close()
    return camera, minted


def add_camera(db: str, camera_id: str, url: str) -> None:
    """Add a camera while the server runs (it follows the registry within about a second)."""
    registry = Registry(db)
    registry.upsert([make_camera(camera_id, camera_id, "Jung-gu", LAT + 0.0001, LON, url)])
    registry.close()


def remove_camera(db: str, camera_id: str) -> None:
    registry = Registry(db)
    registry.remove(camera_id)
    registry.close()


class Viewer(DecodingViewer):
    async def play(self, base: str, camera: str, token: str) -> str:
        """Join by WHEP; the answer SDP."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        async with (
            aiohttp.ClientSession(base) as http,
            http.post(f"/whep/{camera}", data=await self.offer(), headers=headers) as res,
        ):
            answer = await res.text()
            if res.status != 201:
                raise RuntimeError(f"WHEP: {res.status} {answer}")
        await self.answer(answer)
        return answer


@dataclass
class Window:
    """What the probe saw in one phase of one attack."""

    name: str
    start: float
    end: float = 0.0
    fps: list[float] = field(default_factory=list)  # per whole second
    max_gap_ms: float = 0.0
    health_ms: list[float] = field(default_factory=list)
    health_failures: int = 0
    rss_mib: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.health_ms)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None
        mean = round(statistics.fmean(self.fps), 1) if self.fps else 0.0
        return {"phase": self.name, "s": round(self.end - self.start, 1), "fps_min": min(self.fps, default=0.0),
                "fps_mean": mean, "max_gap_ms": round(self.max_gap_ms),
                "healthz_p95_ms": round(p95, 1) if p95 is not None else None, "healthz_n": len(lat),
                "healthz_failed": self.health_failures, "rss_mib": round(self.rss_mib, 1)}  # fmt: skip


@dataclass
class Target:
    base: str
    proc: subprocess.Popen[bytes]
    db: str
    camera: str
    tokens: list[str]
    viewer: Viewer
    answer: str
    windows: list[Window] = field(default_factory=list)
    _probe: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def rss_mib(self) -> float:
        return memory(tree([self.proc.pid])).rss / 2**20

    def phase(self, name: str) -> Window:
        """Close the current window, open `name`."""
        now = time.monotonic()
        if self.windows:
            self._close(self.windows[-1], now)
        window = Window(name, now)
        self.windows.append(window)
        return window

    def _close(self, window: Window, now: float) -> None:
        window.end = now
        frames = [t for t in self.viewer.frames if window.start <= t < now]
        whole = int(now - window.start)
        window.fps = [
            float(sum(1 for t in frames if window.start + s <= t < window.start + s + 1)) for s in range(whole)
        ]
        if not whole and now > window.start:  # shorter than a second: its rate
            window.fps = [len(frames) / (now - window.start)]
        gaps = [b - a for a, b in itertools.pairwise(frames)]
        window.max_gap_ms = 1000 * max(gaps, default=now - window.start)
        window.rss_mib = self.rss_mib()

    def finish(self) -> list[dict[str, Any]]:
        if self.windows and not self.windows[-1].end:
            self._close(self.windows[-1], time.monotonic())
        return [w.summary() for w in self.windows]

    async def probe(self, every: float = 0.1) -> None:
        """/healthz on a fresh connection every `every` s (a new connection is what a flood of them delays)."""
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(self.base, connector=connector) as http:
            while True:
                t0 = time.monotonic()
                try:
                    async with asyncio.timeout(5), http.get("/healthz") as res:
                        await res.read()
                        ok = res.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if self.windows:
                    window = self.windows[-1]
                    window.health_ms.append(1000 * (time.monotonic() - t0)) if ok else None
                    window.health_failures += 0 if ok else 1
                await asyncio.sleep(max(0.0, every - (time.monotonic() - t0)))

    async def measure(self, attack: Any, seconds: float, settle: float = 3.0, **options: Any) -> dict[str, Any]:
        """before (settle s), during (the attack, `seconds`), after (settle s); the attack's own figures."""
        name = attack.__name__
        self.phase(f"{name}: before")
        await asyncio.sleep(settle)
        self.phase(f"{name}: during")
        result = await attack(self, seconds, **options)
        self.phase(f"{name}: after")
        await asyncio.sleep(settle)
        windows = self.windows[-3:]
        now = time.monotonic()
        self._close(windows[-1], now)
        return {"attack": name, "result": result, "windows": [w.summary() for w in windows]}


@contextlib.asynccontextmanager
async def target(tmp: Path, camera_url: str, tokens: int = 4) -> AsyncIterator[Target]:
    db = str(tmp / "floods.db")
    camera, minted = prepare(db, camera_url, tokens)
    with serve(db, tmp / "server.log", workers=WORKERS) as (base, proc):
        async with aiohttp.ClientSession(base) as http:
            await wait_ready(http, proc, 60)
        viewer = Viewer()
        try:
            answer = await viewer.play(base, camera, minted[0])
            async with asyncio.timeout(20):
                while viewer.decoded < 25:
                    await asyncio.sleep(0.05)
            t = Target(base, proc, db, camera, minted, viewer, answer)
            t._probe = asyncio.create_task(t.probe())
            try:
                yield t
            finally:
                t._probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t._probe
        finally:
            await viewer.close()
