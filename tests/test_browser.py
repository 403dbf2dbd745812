"""A real browser plays a camera from the console page over WHEP: headless Chromium, loopback ICE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from helpers.access import FAST, grant
from helpers.browser import chromium
from helpers.feed import Unit, clip_camera, make_clip, read_units, rtsp_camera

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS
from signaling.app import create_app

PLAY_SECONDS = 3.0


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=8, gop=100))


@pytest.fixture(params=["clip", "rtsp"])
async def camera(request: pytest.FixtureRequest, units: list[Unit]) -> AsyncIterator[Hub]:
    """The camera: the clip paced into a hub (joined 2.4 s into a 4 s GOP), or a real gst-rtsp-server
    camera with a 4 s GOP read by the real ingest (joined wherever it happens to be)."""
    if request.param == "clip":
        source = clip_camera("cam1", units, start=60)
    else:
        source = rtsp_camera("cam1", request.getfixturevalue("long_gop_camera"))
    async with source as hub:
        yield hub


@pytest.fixture
async def server(camera: Hub) -> AsyncIterator[tuple[str, Egress]]:
    """(console URL with an operator's stream token in its fragment, egress)."""
    egress = Egress({camera.camera_id: camera}.get, ice_hosts=["127.0.0.1"])
    cameras = [{"id": camera.camera_id, "name": "Test camera", "district": "Loopback", "codec": "h264",
                "lat": 37.5665, "lon": 126.978}]  # fmt: skip
    app = create_app(LocalWorkerClient(egress), lambda: cameras, access=FAST)
    token = grant(app[ACCESS], cameras[0])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/#token={token}", egress
    await runner.cleanup()
    await egress.close_all()


async def test_console_plays_a_camera_live(server: tuple[str, Egress]) -> None:
    url, egress = server
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(url)
        await page.click("#cameras li[data-camera=cam1]")  # as an operator would
        await page.wait_for_function("window.goldentime.firstPictureMs !== null", timeout=10_000)
        start: dict[str, Any] = await page.evaluate("({...window.goldentime})")
        await asyncio.sleep(PLAY_SECONDS)
        end: dict[str, Any] = await page.evaluate("({...window.goldentime})")
        [session] = egress.sessions
        print(f"\nbrowser: first picture {start['firstPictureMs']} ms after RTCPeerConnection; "
              f"{end['framesDecoded']} frames, {end['fps']} fps, {end['width']}x{end['height']}, "
              f"freezes {end['freezeCount']}, codec {end['codec']}; server: {session}")  # fmt: skip
        assert end["state"] == "live" and end["error"] is None
        assert (end["width"], end["height"]) == (640, 360)
        assert end["framesDecoded"] >= 20 * PLAY_SECONDS  # ~25 fps, not a replay burst
        assert end["freezeCount"] == 0
        assert session["first_picture_age_ms"] < 200  # the present, not the GOP's keyframe
        assert start["firstPictureMs"] < 2000

        await page.click("#stop")
        for _ in range(30):
            if not egress.sessions:
                break
            await asyncio.sleep(0.1)
        assert egress.sessions == []  # DELETE reached the server
