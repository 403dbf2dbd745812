"""The soak's view of a running server, over HTTP only (as an operator's scraper and an agency app see it):
readiness, /metrics (node totals and per-camera series), /ops/workers, camera status, and stream tokens for
WebRTC viewers; plus the viewer itself (aiortc, counting decoded frames)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from helpers.viewers import DecodingViewer

from lib.camfarm_measure import prometheus

PER_SCRAPE = 100  # the server names at most this many cameras per /metrics request
STREAMING = re.compile(r'^goldentime_camera_streaming\{camera="([^"]+)"\} 1$', re.MULTILINE)
WORKER_LABEL = re.compile(r'worker="([^"]*)"')


class Api:
    def __init__(self, base: str, admin: str, agency: str) -> None:
        """`admin` and `agency`: HTTP Basic headers of an admin client (the city's ops view: every camera's status)
        and of an agency client (incidents and stream tokens)."""
        self.base, self.basic, self.agency_basic = base, admin, agency
        self.bearer = self.agency_bearer = ""
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self.http = aiohttp.ClientSession(self.base, timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.http is not None
        return self.http

    async def wait_up(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Until the front answers; then log in (client credentials -> API token: cheaper per call than Basic)."""
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode} (see its log)")
            try:
                async with self.session.get("/healthz") as res:
                    if res.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /healthz")
            await asyncio.sleep(0.2)
        self.bearer, self.agency_bearer = await self._login(self.basic), await self._login(self.agency_basic)

    async def _login(self, basic: str) -> str:
        headers = {"Authorization": basic}
        async with self.session.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=headers) as res:
            res.raise_for_status()
            return f"Bearer {(await res.json())['access_token']}"

    async def ready(self) -> bool:
        try:
            async with self.session.get("/readyz") as res:
                return res.status == 200
        except aiohttp.ClientError:
            return False

    async def metrics(self, cameras: Iterable[str] = ()) -> dict[str, dict[str, float]]:
        """{metric: {worker label or labels text: value}}: series labelled only by worker are keyed by it."""
        text = await self._metrics_text(list(cameras))
        out: dict[str, dict[str, float]] = {}
        for name, series in prometheus(text).items():
            for labels, value in series.items():
                worker = WORKER_LABEL.fullmatch(labels.strip("{}"))
                state = re.fullmatch(r'\{state="([^"]*)"\}', labels)
                key = worker.group(1) if worker else state.group(1) if state else labels
                out.setdefault(name, {})[key] = value
        return out

    async def _metrics_text(self, cameras: list[str]) -> str:
        try:
            async with self.session.get("/metrics", params=[("camera", c) for c in cameras]) as res:
                return await res.text() if res.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return ""

    async def streaming(self, cameras: Iterable[str]) -> set[str]:
        """Which of these cameras stream now (per-camera series; a camera whose worker is down is absent)."""
        ids = list(cameras)
        chunks = [ids[i : i + PER_SCRAPE] for i in range(0, len(ids), PER_SCRAPE)]
        texts = await asyncio.gather(*(self._metrics_text(chunk) for chunk in chunks))
        return {cid for text in texts for cid in STREAMING.findall(text)}

    async def workers(self) -> list[dict[str, Any]]:
        try:
            async with self.session.get("/ops/workers") as res:
                return list((await res.json())["workers"]) if res.status == 200 else []
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return []

    async def owners(self, cameras: Iterable[str]) -> dict[str, int]:
        """camera -> index of the worker that holds it (GET /api/cameras/{id}/status)."""
        out: dict[str, int] = {}
        for cid in cameras:
            async with self.session.get(f"/api/cameras/{cid}/status", headers={"Authorization": self.bearer}) as res:
                if res.status == 200:
                    out[cid] = int((await res.json()).get("worker", -1))
        return out

    async def stream_token(self, camera_id: str, lon: float, lat: float, ttl_s: int) -> str:
        """An incident a few metres around the camera, and a stream token for it (as an agency app does)."""
        until = datetime.fromtimestamp(time.time() + ttl_s + 60, UTC).isoformat()
        body = {"service": "112-video", "basis": "soak benchmark", "until": until, "radius_m": 5,
                "geometry": {"type": "Point", "coordinates": [lon, lat]}}  # fmt: skip
        headers = {"Authorization": self.agency_bearer}
        async with self.session.post("/api/incidents", json=body, headers=headers) as res:
            if res.status != 201:
                raise RuntimeError(f"incident: {res.status} {await res.text()}")
            incident = (await res.json())["id"]
        grant = {"operator": "soak viewer", "ttl_s": ttl_s}
        async with self.session.post(f"/api/incidents/{incident}/tokens", json=grant, headers=headers) as res:
            if res.status != 201:
                raise RuntimeError(f"token: {res.status} {await res.text()}")
            doc = await res.json()
        if camera_id not in {c["id"] for c in doc["cameras"]}:
            raise RuntimeError(f"{camera_id} not in its incident's scope: {doc['cameras']}")
        return str(doc["token"])

    async def whep(self, camera_id: str, token: str, offer: str) -> str:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        async with self.session.post(f"/whep/{camera_id}", data=offer, headers=headers) as res:
            if res.status != 201:
                raise RuntimeError(f"WHEP {camera_id}: {res.status} {await res.text()}")
            return await res.text()


class Viewer(DecodingViewer):
    """A decoding viewer (tests/viewers.py) on one camera, joined through the API's WHEP call."""

    def __init__(self, camera_id: str) -> None:
        super().__init__()
        self.camera_id = camera_id

    async def start(self, api: Api, token: str) -> None:
        await self.answer(await api.whep(self.camera_id, token, await self.offer()))
