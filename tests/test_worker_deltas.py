"""A worker taking changes while it runs, in-process against real cameras: registry deltas (a changed URL
restarts that camera only), the state feed the front polls (deltas, not every camera each time), the registry
followed live by the server, and a camera's sub-stream passed through for the `low` profile."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from av import VideoFrame
from helpers.access import FAST, auth, grant
from helpers.peers import SimCam, free_port, simcam
from test_whep import Viewer

from mediaserver.cli.serve import ServerSettings, start, stop
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.cluster.worker_rpc import SECRET_HEADER, create_rpc_app
from mediaserver.registry import Registry, make_camera
from mediaserver.simcam.clips import ensure_clip
from mediaserver.transcode import LOW
from mediaserver.worker import Worker, WorkerSettings
from signaling.access import ACCESS
from signaling.app import create_app

LAT, LON = 37.5663, 126.9779
SECRET = {SECRET_HEADER: "s"}


async def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def has_picture(worker: Worker, *ids: str) -> bool:
    return all(cid in worker.ingests and worker.hubs[cid].gop() for cid in ids)


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    worker = Worker(WorkerSettings(ice_hosts=["127.0.0.1"]))
    yield worker
    await worker.stop()


async def test_a_changed_url_restarts_that_camera_only(worker: Worker, h264_camera: str, h265_camera: str) -> None:
    a, b = (make_camera(cid, cid, "", LAT, LON, h264_camera) for cid in ("a", "b"))
    assert await worker.put_camera(a) == "added" and await worker.put_camera(b) == "added"
    await until(lambda: has_picture(worker, "a", "b"), 10, "cameras streaming")
    hub, b_ingest = worker.hubs["a"], worker.ingests["b"]

    assert await worker.put_camera(a) == "unchanged"
    renamed = make_camera("a", "Gate 2", "Mapo-gu", LAT, LON, h264_camera)
    assert await worker.put_camera(renamed) == "updated" and worker.ingests["a"].connects == 1
    moved = make_camera("a", "Gate 2", "Mapo-gu", LAT, LON, h265_camera)
    assert await worker.put_camera(moved) == "restarted"
    await until(lambda: worker.hubs["a"].codec == "h265" and has_picture(worker, "a"), 10, "a on its new URL")
    assert worker.hubs["a"] is hub  # same hub: its viewers stay subscribed across the change
    assert worker.ingests["b"] is b_ingest and b_ingest.connects == 1  # b never noticed


async def test_state_feed_sends_deltas(worker: Worker, h264_camera: str, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.db")
    registry.upsert(make_camera(cid, cid, "", LAT, LON, h264_camera) for cid in ("a", "b", "c"))
    worker.add_camera(registry.get("a"))  # type: ignore[arg-type]
    worker.add_camera(registry.get("b"))  # type: ignore[arg-type]
    app = create_rpc_app(worker, "s", "worker-0", registry.get_many)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:

        async def poll(cursor: str = "") -> dict[str, Any]:
            res = await client.get("/state", params={"cursor": cursor}, headers=SECRET)
            assert res.status == 200
            return dict(await res.json())

        full = await poll()
        assert full["full"] and set(full["cameras"]) == {"a", "b"}
        mirror = dict(full["cameras"])  # what the front keeps, from deltas alone
        cursor = full["cursor"]
        await until(lambda: has_picture(worker, "a", "b"), 10, "cameras streaming")
        delta = await poll(cursor)
        assert not delta["full"] and set(delta["cameras"]) <= {"a", "b"}
        mirror.update(delta["cameras"])
        assert {cid: tuple(st) for cid, st in mirror.items()} == worker.states()
        steady = await poll(delta["cursor"])
        assert (steady["cameras"], steady["gone"], steady["sessions"], steady["ended"]) == ({}, [], [], [])

        res = await client.post("/cameras", json={"put": ["c", "nope"], "remove": ["a"]}, headers=SECRET)
        assert res.status == 200 and (await res.json())["added"] == 1 and set(worker.ingests) == {"b", "c"}
        changed = await poll(steady["cursor"])
        assert set(changed["cameras"]) == {"c"} and changed["gone"] == ["a"]

        viewer = Viewer()  # a session that starts and ends between two polls is still reported as ended
        res = await client.post("/offer", json={"camera_id": "b", "sdp": await viewer.offer()}, headers=SECRET)
        session_id = (await res.json())["session_id"]
        await client.post("/close", json={"session_id": session_id}, headers=SECRET)
        await viewer.pc.close()
        after = await poll(changed["cursor"])
        assert after["ended"] == [session_id] and after["sessions"] == []
        assert (await poll("stale"))["full"]  # a lost answer or a restarted worker: everything again
    registry.close()


def cli(db: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "mediaserver.cli", "cameras", *args, "--db", db], check=True,
                   capture_output=True, timeout=60)  # fmt: skip


async def test_the_server_follows_the_registry_without_a_restart(
    tmp_path: Path, h264_camera: str, h265_camera: str
) -> None:
    db = str(tmp_path / "gt.db")
    registry = Registry(db)
    registry.add(make_camera("first", "First", "", LAT, LON, h264_camera))
    registry.close()
    settings = ServerSettings(db=db, port=free_port(), worker=WorkerSettings(ice_hosts=["127.0.0.1"]))
    front = await asyncio.wait_for(start(settings), 30)
    try:
        worker = front.worker
        assert worker is not None and set(worker.ingests) == {"first"}
        t0 = time.monotonic()
        cli(db, "add", "--id", "late", "--name", "Late", "--lat", str(LAT), "--lon", str(LON), "--url", h264_camera)
        await until(lambda: has_picture(worker, "late"), 10, "a camera added by another process streams")
        print(f"camera added by the CLI streaming after {time.monotonic() - t0:.2f} s")
        assert "late" in {c["id"] for c in front.sync.public()}
        cli(db, "add", "--id", "late", "--name", "Late", "--lat", str(LAT), "--lon", str(LON), "--url", h265_camera)
        await until(lambda: worker.hubs["late"].codec == "h265", 10, "the new URL is ingested")
        assert worker.ingests["first"].connects == 1
        other = Registry(db)
        other.remove("late")
        other.close()
        await until(lambda: "late" not in worker.ingests, 5, "a removed camera stops")
        assert "late" not in {c["id"] for c in front.sync.public()}
    finally:
        await asyncio.wait_for(stop(front), 30)


# --- sub-streams ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_stream_camera(h264_clip: Path, clips_dir: Path) -> Iterator[SimCam]:
    """One camera with a 640x360 main stream and a 320x180 sub-stream (two gst-rtsp-server mounts)."""
    sub_clip = ensure_clip(clips_dir, "h264", size="320x180", gop=25, bitrate="200k")
    with simcam({"main": h264_clip, "sub": sub_clip}) as cam:
        yield cam


async def test_low_profile_gets_the_substream_passed_through(worker: Worker, two_stream_camera: SimCam) -> None:
    main_url, sub_url = two_stream_camera.url("main"), two_stream_camera.url("sub")
    camera = make_camera("cam1", "Gate", "Jung-gu", LAT, LON, main_url, sub_url)
    worker.add_camera(camera)
    await until(lambda: has_picture(worker, "cam1") and bool(worker.sub_hubs["cam1"].gop()), 10, "both streams")
    status = worker.status("cam1")
    assert status is not None and status["substream"]["state"] == "streaming"  # type: ignore[index]

    local = LocalWorkerClient(worker.egress, worker)
    public = camera.public()
    app = create_app(local, lambda: [public], access=FAST)
    async with TestClient(TestServer(app, host="127.0.0.1"), headers=auth(grant(app[ACCESS], public))) as client:
        viewer = Viewer()
        res = await client.post("/whep/cam1?profile=low", data=await viewer.offer(),
                                headers={"Content-Type": "application/sdp"})  # fmt: skip
        assert res.status == 201, await res.text()
        await viewer.answer(await res.text())
        track = await asyncio.wait_for(viewer.track, 5)
        sizes = set()
        for _ in range(40):  # across the sub-stream's keyframe (1 s GOP)
            frame = await asyncio.wait_for(track.recv(), 2)
            assert isinstance(frame, VideoFrame)
            sizes.add((frame.width, frame.height))
            assert not [b for b in worker.egress.bridges.bridges() if b.profile is LOW]  # never a transcode
        assert sizes == {(320, 180)}  # the sub-stream's own size (a low transcode of the main would be 640x360)
        assert worker.egress.bridges.active == 0  # past a keyframe: the camera's own bytes, nothing bridged
        [session] = worker.egress.sessions
        assert session["profile"] == "low" and worker.sub_hubs["cam1"].subscriber_count == 1
        await viewer.pc.close()

    await worker.put_camera(make_camera("cam1", "Gate", "Jung-gu", LAT, LON, main_url))  # sub-stream unregistered
    assert "cam1" not in worker.sub_hubs and "cam1" not in worker.sub_ingests and "cam1" in worker.ingests
