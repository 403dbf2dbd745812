"""WHEP over HTTP: status codes, error bodies, CORS, and a full exchange with a real aiortc viewer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from av import VideoFrame
from helpers.access import FAST, auth, grant
from helpers.feed import Unit, clip_camera, feed, make_clip, read_units
from helpers.viewers import Viewer

from mediaserver import bridge
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS
from signaling.app import create_app
from signaling.whep import MAX_BODY

ALLOWED = "https://console.example.org"
CAMERAS: list[dict[str, Any]] = [
    {"id": "cam1", "name": "Main gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97, "codec": "h264",
     "url": "rtsp://admin:secret@10.0.0.5/stream1", "password": "secret"},
    {"id": "cam265", "name": "Plaza", "district": "Jung-gu", "codec": "h265"},
    {"id": "ghost", "name": "Registered, on no worker", "district": "Jung-gu", "lat": 37.5601, "lon": 126.9701},
]  # fmt: skip


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=4, gop=50))


@pytest.fixture
async def hub(units: list[Unit]) -> AsyncIterator[Hub]:
    hub = Hub("cam1")
    task = asyncio.create_task(feed(hub, units, start=20))  # a live camera, joined mid-GOP
    yield hub
    task.cancel()


@pytest.fixture
async def egress(hub: Hub) -> AsyncIterator[Egress]:
    egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
    yield egress
    await egress.close_all()


@pytest.fixture
async def client(egress: Egress) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, cors_origins=[ALLOWED], access=FAST)
    token = grant(app[ACCESS], CAMERAS[0])  # every WHEP request carries a stream token for an incident at cam1
    async with TestClient(TestServer(app, host="127.0.0.1"), headers=auth(token)) as client:
        yield client


async def post_offer(client: TestClient[Any, Any], sdp: str, camera: str = "cam1", **headers: str) -> Any:
    return await client.post(f"/whep/{camera}", data=sdp, headers={"Content-Type": "application/sdp", **headers})


async def test_full_exchange_receives_live_frames(client: TestClient[Any, Any], egress: Egress) -> None:
    viewer = Viewer()
    t0 = time.monotonic()
    res = await post_offer(client, await viewer.offer())
    assert res.status == 201, await res.text()
    assert res.content_type == "application/sdp"
    location = res.headers["Location"]
    assert location.startswith("/whep/cam1/") and res.headers["ETag"]
    answer = await res.text()
    assert "H264/90000" in answer and "VP8" not in answer and "a=candidate:" in answer
    assert "127.0.0.1" in answer
    await viewer.answer(answer)

    track = await asyncio.wait_for(viewer.track, 5)
    frame = await asyncio.wait_for(track.recv(), 5)
    assert isinstance(frame, VideoFrame)
    first_ms = 1000 * (time.monotonic() - t0)
    assert (frame.width, frame.height) == (640, 360)
    for _ in range(10):
        await asyncio.wait_for(track.recv(), 2)
    [stats] = egress.sessions
    assert stats["frames_bridged"] > 0  # joined mid-GOP: opened through the bridge
    print(f"aiortc viewer: first frame {first_ms:.0f} ms after POST; server: {stats}")

    res = await client.patch(location, data="a=end-of-candidates\r\n",
                             headers={"Content-Type": "application/trickle-ice-sdpfrag"})  # fmt: skip
    assert res.status == 204
    res = await client.delete(location)
    assert res.status == 200
    assert egress.sessions == []
    assert (await client.delete(location)).status == 404
    await viewer.pc.close()


async def test_offer_errors(client: TestClient[Any, Any], egress: Egress) -> None:
    sdp = await Viewer().offer()
    res = await post_offer(client, sdp, camera="nope")  # 403 before 404: a token cannot probe which ids exist
    assert res.status == 403 and "scope" in (await res.json())["error"]
    res = await post_offer(client, sdp, camera="ghost")  # in the incident's scope, on no worker
    assert res.status == 404 and "unknown camera" in (await res.json())["error"]

    res = await client.post("/whep/cam1", data=sdp, headers={"Content-Type": "text/plain"})
    assert res.status == 415 and "application/sdp" in (await res.json())["detail"]

    res = await post_offer(client, "v=0\r\n" + "a=x\r\n" * (MAX_BODY // 4))
    assert res.status == 413 and "too large" in (await res.json())["error"]

    res = await post_offer(client, "this is not sdp")
    assert res.status == 400 and "bad offer" in (await res.json())["error"]

    audio_only = sdp.split("m=video")[0].replace("BUNDLE 0", "BUNDLE")
    res = await post_offer(client, audio_only)
    assert res.status == 400 and "no video" in (await res.json())["detail"]

    vp8_only = "\r\n".join(
        line for line in sdp.split("\r\n") if not any(k in line for k in ("H264", "rtx", "fmtp", "rtcp-fb"))
    )
    res = await post_offer(client, vp8_only)
    assert res.status == 400 and "H.264" in (await res.json())["detail"]
    assert egress.sessions == []  # nothing leaked, and the server still answers:
    assert (await post_offer(client, sdp)).status == 201


async def test_session_errors(client: TestClient[Any, Any]) -> None:
    frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
    assert (await client.patch("/whep/cam1/nosuch", data="a=end-of-candidates", headers=frag)).status == 404
    assert (await client.delete("/whep/cam1/nosuch")).status == 404
    res = await post_offer(client, await Viewer().offer())
    location = res.headers["Location"]
    res = await client.patch(location, data="a=end-of-candidates", headers={"Content-Type": "text/plain"})
    assert res.status == 415
    res = await client.patch(location, data="a=ice-ufrag:other\r\na=ice-pwd:xxxxxxxxxxxxxxxxxxxxxxxx", headers=frag)
    assert res.status == 422 and "ICE restart" in (await res.json())["detail"]
    res = await client.patch(location, data="a=end-of-candidates", headers={**frag, "If-Match": '"stale"'})
    assert res.status == 412
    res = await client.patch(location, data="a=candidate:garbage", headers=frag)
    assert res.status == 400


async def test_cors(client: TestClient[Any, Any]) -> None:
    preflight = {"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
    res = await client.options("/whep/cam1", headers=preflight)
    assert res.status == 204
    assert res.headers["Access-Control-Allow-Origin"] == ALLOWED
    allowed_headers = res.headers["Access-Control-Allow-Headers"].lower()
    assert all(h in allowed_headers for h in ("authorization", "content-type", "if-match"))
    assert "PATCH" in res.headers["Access-Control-Allow-Methods"]

    res = await client.options("/whep/cam1", headers={**preflight, "Origin": "https://evil.example"})
    assert res.status == 403 and "Access-Control-Allow-Origin" not in res.headers

    res = await post_offer(client, await Viewer().offer(), Origin=ALLOWED)
    assert res.status == 201 and res.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Location" in res.headers["Access-Control-Expose-Headers"]
    res = await post_offer(client, "garbage", camera="nope", Origin=ALLOWED)  # a refusal carries CORS headers too
    assert res.status == 403 and res.headers["Access-Control-Allow-Origin"] == ALLOWED
    res = await client.get("/api/cameras", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in res.headers

    res = await client.options("/whep/cam1")  # plain OPTIONS: what the endpoint accepts
    assert res.status == 204 and res.headers["Accept-Post"] == "application/sdp"


async def test_camera_api_and_console(client: TestClient[Any, Any]) -> None:
    res = await client.get("/api/cameras", headers={"Origin": ALLOWED})
    assert res.headers["Access-Control-Allow-Origin"] == ALLOWED
    cameras = await res.json()  # a stream token lists what its incident opens, with distances
    assert cameras[0] == {"id": "cam1", "name": "Main gate", "district": "Jung-gu", "lat": 37.56,
                          "lon": 126.97, "codec": "h264", "distance_m": 0.0}  # fmt: skip
    assert "secret" not in await res.text()
    anonymous = await client.get("/api/cameras", headers={"Authorization": ""})
    assert anonymous.status == 401 and "authentication required" in await anonymous.text()
    index = await client.get("/")
    assert index.status == 200 and "player.js" in await index.text()
    assert (await client.get("/web/player.js")).status == 200


async def test_camera_removed_ends_its_sessions(client: TestClient[Any, Any], egress: Egress, hub: Hub) -> None:
    viewer = Viewer()
    res = await post_offer(client, await viewer.offer())
    await viewer.answer(await res.text())
    track = await asyncio.wait_for(viewer.track, 5)
    await asyncio.wait_for(track.recv(), 5)
    hub.close()
    for _ in range(50):
        if not egress.sessions:
            break
        await asyncio.sleep(0.1)
    assert egress.sessions == []
    await viewer.pc.close()


async def test_h265_camera_is_served_as_h264(tmp_path: Path) -> None:
    units = read_units(make_clip(tmp_path / "c.h265", seconds=2, gop=25, codec="h265"), "h265")
    async with clip_camera("cam265", units, start=10) as hub:
        egress = Egress({"cam265": hub}.get, ice_hosts=["127.0.0.1"])
        viewer = Viewer()
        _, answer = await egress.offer("cam265", await viewer.offer())
        await viewer.answer(answer)
        track = await asyncio.wait_for(viewer.track, 5)
        for _ in range(30):  # across the camera's keyframes: the transcode goes on
            frame = await asyncio.wait_for(track.recv(), 2)
        assert isinstance(frame, VideoFrame) and (frame.width, frame.height) == (640, 360)
        await viewer.pc.close()
        await egress.close_all()


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_picture_loss_is_answered_and_a_closed_peer_ends_its_session(
    client: TestClient[Any, Any], egress: Egress, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge, "MIN_REFRESH_INTERVAL", 0.0)
    viewer = Viewer()
    res = await post_offer(client, await viewer.offer())
    await viewer.answer(await res.text())
    track = await asyncio.wait_for(viewer.track, 5)
    session = next(iter(egress._sessions.values()))
    await wait_until(lambda: session.sender.group is not None)  # passthrough, in the camera's shared fan-out
    hub = egress.hub_lookup(session.camera_id)
    await wait_until(lambda: hub is not None and len(hub.gop()) >= 3)  # mid-GOP: the answer is a bridge IDR
    keyframes, bridged = session.feed.keyframes, session.feed.bridged

    session.pc.getTransceivers()[0].sender._send_keyframe()  # what aiortc does on a viewer's PLI/FIR
    assert session.sender.group is None  # out of the fan-out, back to its own feed
    await wait_until(lambda: session.feed.bridged > bridged)
    assert session.feed.keyframes > keyframes  # an IDR of the newest frame, from the cache
    await wait_until(lambda: session.sender.group is not None, 10)  # and back in the fan-out at the next keyframe
    for _ in range(5):
        await asyncio.wait_for(track.recv(), 2)  # and the picture goes on

    await viewer.pc.close()  # DTLS close_notify: the server ends the session by itself
    await wait_until(lambda: not egress.sessions)
