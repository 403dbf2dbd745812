"""A real operator page (headless Chromium, the console with a stream token) views an in-scope camera;
the owning agency closes the incident and the picture stops within a second, server-side; the audit shows
the view with its start and end."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from helpers.access import FAST, agency, incident_around
from helpers.browser import chromium
from helpers.feed import Unit, clip_camera, make_clip, read_units

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from signaling.access import ACCESS, Access
from signaling.app import create_app

CAMERA = {"id": "cam1", "name": "City Hall", "district": "Jung-gu", "codec": "h264", "lat": 37.5665, "lon": 126.978}


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=4, gop=25))


@pytest.fixture
async def server(units: list[Unit], tmp_path: Path) -> AsyncIterator[tuple[str, Egress, Access]]:
    async with clip_camera("cam1", units, start=10) as hub:
        egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
        app = create_app(LocalWorkerClient(egress), lambda: [CAMERA], db=tmp_path / "gt.db", access=FAST)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", egress, app[ACCESS]
        await runner.cleanup()
        await egress.close_all()


async def test_closing_the_incident_stops_the_operators_video(server: tuple[str, Egress, Access]) -> None:
    base, egress, access = server
    police, secret = agency(access, "police-112")
    incident = incident_around(access, police, 126.978, 37.5665)
    basic = base64.b64encode(f"{police.client_id}:{secret}".encode()).decode()
    async with ClientSession(headers={"Authorization": f"Basic {basic}"}) as agency_app:
        res = await agency_app.post(f"{base}/api/incidents/{incident.id}/tokens", json={"operator": "officer kim"})
        issued = await res.json()
        assert [c["id"] for c in issued["cameras"]] == ["cam1"]
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{base}/?camera=cam1#token={issued['token']}")
            await page.wait_for_function("window.goldentime.state === 'live'", timeout=10_000)
            assert "token=" not in page.url  # the fragment is removed from the address bar
            await asyncio.sleep(1.0)
            before = await page.evaluate("window.goldentime.framesDecoded")
            closed_at = await page.evaluate("performance.now()")
            t0 = time.monotonic()
            res = await agency_app.post(f"{base}/api/incidents/{incident.id}/close")
            assert (await res.json())["views_ended"] == 1
            server_ms = 1000 * (time.monotonic() - t0)
            await asyncio.sleep(1.5)
            state = await page.evaluate("({...window.goldentime})")
    stopped_ms = state["lastFrameMs"] - closed_at
    print(f"\nclose -> server session gone {server_ms:.0f} ms; last frame painted {stopped_ms:.0f} ms after close; "
          f"page state {state['state']}")  # fmt: skip
    assert before > 0 and egress.sessions == []
    assert stopped_ms < 1000, state
    [started] = access.audit.query(incident=incident.id, event="view.started")
    [ended] = access.audit.query(incident=incident.id, event="view.ended")
    assert started["operator"] == ended["operator"] == "officer kim" and started["camera"] == "cam1"
    assert ended["reason"] == "incident closed" and ended["duration_s"] >= 1.0
    assert access.audit.verify().ok
