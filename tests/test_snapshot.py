"""JPEG snapshots: decoded from the GOP cache, right size, cached briefly, authorised and audited like a view."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import av
import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, auth, grant
from helpers.feed import Unit, decode_all, make_clip, psnr, read_units

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from mediaserver.snapshot import WIDTHS
from signaling.access import ACCESS
from signaling.app import create_app

CAMERAS: list[dict[str, Any]] = [
    {"id": "cam1", "name": "Gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97, "codec": "h264"},
    {"id": "far", "name": "Far away", "district": "Nowon-gu", "lat": 37.65, "lon": 127.06, "codec": "h264"},
    {"id": "dark", "name": "Not streaming yet", "district": "Jung-gu", "lat": 37.5601, "lon": 126.9701},
    {"id": "ghost", "name": "Registered, on no worker", "district": "Jung-gu", "lat": 37.5602, "lon": 126.9702},
]  # fmt: skip


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=2, gop=50))


@pytest.fixture
async def served(units: list[Unit]) -> AsyncIterator[tuple[TestClient[Any, Any], Egress, str]]:
    hubs = {c["id"]: Hub(c["id"]) for c in CAMERAS if c["id"] != "ghost"}
    for unit in units[:30]:  # mid-GOP: the snapshot is frame 29, not the keyframe
        hubs["cam1"].publish(unit)
        hubs["far"].publish(unit)
    egress = Egress(hubs.get)
    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, access=FAST)
    token = grant(app[ACCESS], CAMERAS[0])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, egress, token
    await egress.close_all()


def jpeg_frame(data: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(data), format="jpeg_pipe", mode="r") as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"
        return next(container.decode(video=0))


async def snapshot(client: TestClient[Any, Any], token: str | None, camera: str = "cam1", query: str = "") -> Any:
    return await client.get(f"/api/cameras/{camera}/snapshot{query}", headers=auth(token) if token else {})


async def test_snapshot_is_a_jpeg_of_the_newest_frame_at_the_asked_size(
    served: tuple[TestClient[Any, Any], Egress, str], units: list[Unit]
) -> None:
    client, _, token = served
    res = await snapshot(client, token)
    assert res.status == 200 and res.content_type == "image/jpeg"
    assert res.headers["Cache-Control"].startswith("private")
    data = await res.read()
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    frame = jpeg_frame(data)
    assert (frame.width, frame.height) == (640, 360)
    source = decode_all(units[:30])
    assert psnr(frame, source[29]) > 30 and psnr(frame, source[29]) > psnr(frame, source[0]) + 3  # the newest

    small = jpeg_frame(await (await snapshot(client, token, query="?width=320")).read())
    assert (small.width, small.height) == (320, 180)
    assert (await snapshot(client, token, query="?width=5000")).status == 400
    assert (await snapshot(client, token, query="?width=abc")).status == 400

    records = list(client.app[ACCESS].audit.all())
    shots = [r for r in records if r["event"] == "view.snapshot"]
    assert len(shots) == 2 and shots[0]["camera"] == "cam1" and shots[1]["detail"] == {"width": 320}
    assert shots[0]["incident"] and shots[0]["basis"] and shots[0]["operator"] == "officer kim"


async def test_snapshots_are_cached_briefly_and_shared(served: tuple[TestClient[Any, Any], Egress, str]) -> None:
    client, egress, token = served
    results = await asyncio.gather(*(snapshot(client, token) for _ in range(8)))
    bodies = {await r.read() for r in results}
    assert len(bodies) == 1 and egress.snapshots.rendered == 1  # one decode for eight requests
    await snapshot(client, token)
    assert egress.snapshots.rendered == 1
    egress.snapshots.ttl_s = 0.0  # expired: decoded again
    await asyncio.sleep(0.01)
    await snapshot(client, token)
    assert egress.snapshots.rendered == 2


async def test_snapshot_is_authorised_like_a_view(served: tuple[TestClient[Any, Any], Egress, str]) -> None:
    client, egress, token = served
    res = await snapshot(client, None)
    assert res.status == 401 and (await res.json())["error"] == "missing bearer token"
    res = await snapshot(client, "not-a-jwt")
    assert res.status == 401
    res = await snapshot(client, token, camera="far")  # outside the incident's scope
    assert res.status == 403 and "scope" in (await res.json())["error"]
    res = await snapshot(client, token, camera="nope")  # unknown: 403 like any id out of scope, never 404
    assert res.status == 403 and "scope" in (await res.json())["error"]
    res = await snapshot(client, token, camera="ghost")  # in scope: the token may know it exists
    assert res.status == 404
    res = await snapshot(client, token, camera="dark")  # in scope, but no keyframe cached yet
    assert res.status == 503 and res.headers["Retry-After"] == "1"
    denied = [r for r in client.app[ACCESS].audit.all() if r["event"] == "access.denied"]
    assert len(denied) == 4 and all("/snapshot" in r["detail"]["path"] for r in denied)
    assert egress.snapshots.rendered == 0


async def test_distinct_widths_share_a_few_fixed_renders(served: tuple[TestClient[Any, Any], Egress, str]) -> None:
    """30 widths must not cost 30 decodes (a cache bypass in the pool new viewers need): they are rounded up."""
    client, egress, token = served
    widths = list(range(100, 1300, 40))
    results = await asyncio.gather(*(snapshot(client, token, query=f"?width={w}") for w in widths))
    assert all(r.status == 200 for r in results)
    assert egress.snapshots.rendered <= len(WIDTHS) + 1, egress.snapshots.rendered
    sizes = {w: jpeg_frame(await r.read()).width for w, r in zip(widths, results, strict=True)}
    assert sizes[100] == 160 and sizes[180] == 320 and sizes[340] == 640 and sizes[1260] == 640  # never up
