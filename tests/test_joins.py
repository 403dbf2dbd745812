"""Joins in bursts: queued a few at a time and admitted within their deadline instead of refused on the lag they
cause; refused (503 + Retry-After) only once the deadline passes; and one DTLS certificate per worker that
still gives every session its own working DTLS handshake. Real aiortc viewers, a real H.264 clip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, auth, grant
from helpers.feed import Unit, clip_camera, make_clip, read_units
from helpers.viewers import Viewer
from test_whep import post_offer

from mediaserver.admission import AdmissionSettings, JoinQueue, LoadMonitor
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Certificates, Egress, Overloaded
from mediaserver.rtc_seam import certificates
from signaling.access import ACCESS
from signaling.app import create_app

CAMERA = {"id": "cam1", "name": "Gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97, "codec": "h264"}


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=4, gop=25))


@asynccontextmanager
async def served(units: list[Unit], settings: AdmissionSettings) -> AsyncIterator[tuple[TestClient[Any, Any], Egress]]:
    async with clip_camera("cam1", units) as hub:
        egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"], admission=settings)
        app = create_app(LocalWorkerClient(egress), lambda: [CAMERA], access=FAST)
        token = grant(app[ACCESS], CAMERA)
        try:
            async with TestClient(TestServer(app, host="127.0.0.1"), headers=auth(token)) as client:
                yield client, egress
        finally:
            await egress.close_all()


async def test_a_burst_waits_out_a_lag_spike_and_is_admitted_a_few_at_a_time() -> None:
    """The loop reads late (as a burst's own work makes it): joins wait for it instead of being refused, and
    no more than join_concurrency are set up at once."""
    monitor = LoadMonitor(AdmissionSettings(join_concurrency=3, join_deadline_s=5.0, interval_s=0.01))
    queue = JoinQueue(monitor)
    monitor.lag_ms = 500.0  # the probe is not running: the lag stays until we clear it
    active, peak, admitted = 0, 0, 0

    async def join() -> None:
        nonlocal active, peak, admitted
        async with queue.slot(lambda: admitted):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)  # a join's setup
            active -= 1
            admitted += 1

    joins = [asyncio.create_task(join()) for _ in range(30)]
    await asyncio.sleep(0.3)
    assert admitted == 0 and queue.waiting == 27 and queue.active == 3  # held, not refused
    monitor.lag_ms = 0.0
    await asyncio.wait_for(asyncio.gather(*joins), 5)
    assert admitted == 30 and peak == 3 and monitor.refused == 0
    assert queue.waiting == queue.active == 0


async def test_a_full_queue_and_the_session_cap_refuse_at_once() -> None:
    monitor = LoadMonitor(AdmissionSettings(join_concurrency=1, join_queue=1, max_sessions=5, retry_after_s=3))
    queue = JoinQueue(monitor)
    monitor.lag_ms = 500.0
    held = asyncio.create_task(queue.slot(lambda: 0).__aenter__())  # holds the only slot, waiting on the lag
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(queue.slot(lambda: 0).__aenter__())  # the one queued
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded, match="join queue full") as full:
        await queue.slot(lambda: 0).__aenter__()
    with pytest.raises(Overloaded, match="session cap"):
        await queue.slot(lambda: 5).__aenter__()
    assert full.value.retry_after_s == 3
    held.cancel()
    waiting.cancel()
    await asyncio.gather(held, waiting, return_exceptions=True)


async def test_a_join_past_its_deadline_gets_503_with_retry_after(units: list[Unit]) -> None:
    """A loop that never recovers (any lag is too much): the join is held until its deadline, then refused."""
    settings = AdmissionSettings(max_loop_lag_ms=-1.0, join_deadline_s=0.5, retry_after_s=4)
    async with served(units, settings) as (client, egress):
        t0 = time.monotonic()
        res = await post_offer(client, await Viewer().offer())
        waited = time.monotonic() - t0
        assert res.status == 503 and res.headers["Retry-After"] == "4"
        body = await res.json()
        assert "event loop lag" in body["detail"] and body["retry_after_s"] == 4
        assert 0.5 <= waited < 2.0, waited  # queued for its deadline, not refused on the spot
        assert egress.sessions == [] and egress.joins.active == egress.joins.waiting == 0


async def test_a_burst_over_http_is_all_answered(units: list[Unit]) -> None:
    """A lag limit that a burst's own work crosses (2 ms): the joins are answered 201, none refused."""
    settings = AdmissionSettings(max_loop_lag_ms=2.0, interval_s=0.01, join_concurrency=2, join_deadline_s=20.0)
    async with served(units, settings) as (client, egress):
        await post_offer(client, await Viewer().offer())  # starts the monitor
        viewers = [Viewer() for _ in range(12)]
        offers = await asyncio.gather(*(v.offer() for v in viewers))
        answers = await asyncio.wait_for(asyncio.gather(*(post_offer(client, o) for o in offers)), 60)
        assert [r.status for r in answers] == [201] * 12, [await r.text() for r in answers if r.status != 201]
        assert egress.load.refused == 0
        for viewer in viewers:
            await viewer.pc.close()


async def test_sessions_share_the_worker_certificate_and_each_completes_its_own_dtls(units: list[Unit]) -> None:
    async with served(units, AdmissionSettings()) as (client, egress):
        viewers = [Viewer(), Viewer()]
        answers = []
        for viewer in viewers:
            res = await post_offer(client, await viewer.offer())
            assert res.status == 201, await res.text()
            answers.append(await res.text())
            await viewer.answer(answers[-1])
        for viewer in viewers:  # each decrypts its own SRTP: its own DTLS handshake and keys
            track = await asyncio.wait_for(viewer.track, 10)
            await asyncio.wait_for(track.recv(), 10)
        shared = egress.certificates.current()
        sessions = list(egress._sessions.values())
        assert len(sessions) == 2 and all(certificates(s.pc) == [shared] for s in sessions)
        fingerprints = {line for a in answers for line in a.splitlines() if line.startswith("a=fingerprint:sha-256")}
        assert len(fingerprints) == 1  # one certificate in both answers
        for viewer in viewers:
            await viewer.pc.close()


def test_the_certificate_is_renewed_after_its_lifetime() -> None:
    daily = Certificates()
    assert daily.current() is daily.current()
    always_new = Certificates(lifetime_s=0.0)
    assert always_new.current() is not always_new.current()
