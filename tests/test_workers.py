"""`mediaserver serve --workers 2` against real cameras: the split, WHEP through the front to a worker
process, and a worker killed with SIGKILL coming back within 5 s while the other worker's viewer plays on."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from helpers.access import FAST, auth, grant
from helpers.serve_process import serve, wait_ready
from helpers.viewers import DecodingViewer

from mediaserver.cluster.hashring import worker_index, worker_ring
from mediaserver.registry import Registry, make_camera
from mediaserver.worker import Worker, WorkerSettings
from signaling.access import Access

PER_WORKER = 2
LAT, LON = 37.5663, 126.9779


def pick_cameras(workers: int, per_worker: int) -> dict[int, list[str]]:
    """Camera ids such that each worker owns `per_worker` of them."""
    ring = worker_ring(workers)
    picked: dict[int, list[str]] = {i: [] for i in range(workers)}
    n = 0
    while any(len(ids) < per_worker for ids in picked.values()):
        cid = f"cam-{n}"
        owner = worker_index(ring, cid)
        if len(picked[owner]) < per_worker:
            picked[owner].append(cid)
        n += 1
    return picked


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    token: str
    cameras: dict[int, list[str]]


async def _no_sessions(session_id: str) -> None:
    pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, h264_camera: str) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("workers")
    db = str(tmp / "gt.db")
    cameras = pick_cameras(2, PER_WORKER)
    registry = Registry(db)
    registry.upsert(make_camera(cid, cid, "Jung-gu", LAT, LON, h264_camera) for ids in cameras.values() for cid in ids)
    points = [c.public() for c in registry.list()]
    registry.close()
    access = Access(db, _no_sessions, lambda: points, FAST)
    token = grant(access, points[0])  # one incident around the spot where every camera stands
    access.close()
    with serve(db, tmp / "server.log") as (base, proc):
        yield Server(base, proc, token, cameras)


@pytest.fixture
async def http(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.base, headers=auth(server.token)) as session:
        await wait_ready(session, server.proc)
        yield session


async def camera_states(http: aiohttp.ClientSession, ids: list[str]) -> dict[str, str]:
    """camera -> its state, "streaming" only once pictures arrive (units > 0)."""
    states = {}
    for cid in ids:
        async with http.get(f"/api/cameras/{cid}/status") as res:
            assert res.status == 200, await res.text()
            status = await res.json()
        states[cid] = status["state"] if status.get("units") else f"{status['state']}, no units yet"
    return states


async def wait_streaming(http: aiohttp.ClientSession, ids: list[str], timeout: float) -> float:
    t0 = time.monotonic()
    while set((await camera_states(http, ids)).values()) != {"streaming"}:
        assert time.monotonic() - t0 < timeout, await camera_states(http, ids)
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def workers(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with http.get("/ops/workers") as res:
        assert res.status == 200
        return list((await res.json())["workers"])


class Viewer(DecodingViewer):
    """A decoding viewer that plays a camera through the server's WHEP endpoint."""

    async def play(self, http: aiohttp.ClientSession, camera_id: str) -> str:
        headers = {"Content-Type": "application/sdp"}
        async with http.post(f"/whep/{camera_id}", data=await self.offer(), headers=headers) as res:
            assert res.status == 201, await res.text()
            answer, location = await res.text(), res.headers["Location"]
        await self.answer(answer)
        return location

    async def wait_frames(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()


async def test_cameras_split_across_both_workers(server: Server, http: aiohttp.ClientSession) -> None:
    every = [cid for ids in server.cameras.values() for cid in ids]
    await wait_streaming(http, every, 15)
    for index, ids in server.cameras.items():
        for cid in ids:
            async with http.get(f"/api/cameras/{cid}/status") as res:
                status = await res.json()
            assert status["worker"] == index and status["codec"] == "h264" and status["units"] > 0
            assert "url" not in json.dumps(status) and "rtsp://" not in json.dumps(status)
    assert [w["up"] for w in await workers(http)] == [True, True]
    async with aiohttp.ClientSession(server.base) as anonymous, anonymous.get("/metrics") as res:
        text = await res.text()
    assert res.status == 200 and 'goldentime_cameras{state="streaming"} 4' in text
    for name in ("worker-0", "worker-1", "front"):
        assert f'goldentime_worker_resident_bytes{{worker="{name}"}}' in text
    frames = [line for line in text.splitlines() if line.startswith("goldentime_frames_total{")]
    assert len(frames) == 2 and all(float(line.split()[-1]) > 0 for line in frames)


async def test_viewer_plays_a_camera_held_by_worker_2(server: Server, http: aiohttp.ClientSession) -> None:
    viewer = Viewer()
    camera = server.cameras[1][0]
    location = await viewer.play(http, camera)
    await viewer.wait_frames(10)
    async with http.delete(location) as res:
        assert res.status == 200
    await viewer.close()


async def test_killed_worker_returns_within_5s_and_the_other_plays_on(
    server: Server, http: aiohttp.ClientSession
) -> None:
    every = [cid for ids in server.cameras.values() for cid in ids]
    await wait_streaming(http, every, 15)
    survivor, victim = Viewer(), Viewer()
    await survivor.play(http, server.cameras[0][0])
    await victim.play(http, server.cameras[1][0])
    await asyncio.gather(survivor.wait_frames(10), victim.wait_frames(10))
    before = await workers(http)
    pid = int(before[1]["pid"])

    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    while (await workers(http))[1]["pid"] == pid or not (await workers(http))[1]["up"]:
        await asyncio.sleep(0.05)
    back = await wait_streaming(http, server.cameras[1], 5 - (time.monotonic() - killed_at))
    elapsed = time.monotonic() - killed_at
    print(f"worker 1 killed: cameras streaming again after {elapsed:.2f} s ({back:.2f} s after it answered)")
    assert elapsed < 5

    # the other worker never noticed: same process, its viewer's frames kept coming
    after = await workers(http)
    assert after[0]["pid"] == before[0]["pid"] and after[0]["restarts"] == 0 and after[1]["restarts"] == 1
    during = [t for t in survivor.frames if t >= killed_at]
    assert len(during) >= 20 * elapsed * 0.8, (len(during), elapsed)
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps, default=0) < 0.5

    # the views on the dead worker are gone (the sweep saw it), a new viewer plays there again
    await victim.close()
    again = Viewer()
    await again.play(http, server.cameras[1][0])
    await again.wait_frames(5)
    await asyncio.gather(again.close(), survivor.close())


async def reads_and_units_per_s(worker: Worker, camera_id: str, seconds: float = 1.0) -> tuple[float, float]:
    ingest = worker.ingests[camera_id]
    reads, units = ingest.socket_reads(), ingest.hub.units
    await asyncio.sleep(seconds)
    return (ingest.socket_reads() - reads) / seconds, (ingest.hub.units - units) / seconds


async def test_idle_cameras_are_read_in_batches_watched_ones_at_once(h264_camera: str) -> None:
    """gst-rtsp-server writes every RTP packet on its own (~30-60 reads/s at 25 fps): unwatched, the camera
    costs ~1 read per interval and still delivers every frame; watched, it is read per packet again."""
    worker = Worker(WorkerSettings(idle_read_interval=0.1))
    worker.add_camera(make_camera("cam", "cam", "", LAT, LON, h264_camera))
    try:
        async with asyncio.timeout(10):
            while not worker.hubs["cam"].units:
                await asyncio.sleep(0.05)
        assert worker.batch is not None
        reads, units = await reads_and_units_per_s(worker, "cam")
        assert len(worker.batch) == 1 and reads <= 13 and units >= 20, (reads, units)
        subscription = worker.hubs["cam"].subscribe()
        await asyncio.sleep(0.2)  # leaves the batch at its next tick
        live_reads, live_units = await reads_and_units_per_s(worker, "cam")
        assert len(worker.batch) == 0 and live_reads > 2 * reads and live_units >= 20, (live_reads, live_units)
        subscription.close()
        await asyncio.sleep(0.2)
        assert len(worker.batch) == 1 and worker.ingests["cam"].state == "streaming"
        print(f"reads/s idle {reads:.0f}, watched {live_reads:.0f}; frames/s {units:.0f} / {live_units:.0f}")
    finally:
        await worker.stop()
