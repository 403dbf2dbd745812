"""`mediaserver serve --workers 2` while things change: registry edits from other processes reach only the
owning worker, a dead worker's cameras show as "worker_down" (and its restarts are counted), and the worker
count changes at runtime moving only the cameras whose owner changes, with no gap in their pictures."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from helpers.access import FAST, admin, agency, auth, incident_around
from helpers.serve_process import serve, wait_ready

from mediaserver.cluster.hashring import worker_index, worker_ring
from mediaserver.registry import Registry, make_camera
from signaling.access import Access

LAT, LON = 37.5663, 126.9779


def pick(count: int, wanted: dict[tuple[int, int], int], prefix: str = "cam") -> list[str]:
    """Camera ids by (owner with 2 workers, owner with `count` workers) -> how many of each."""
    two, other = worker_ring(2), worker_ring(count)
    picked: list[str] = []
    left = dict(wanted)
    n = 0
    while any(left.values()):
        cid = f"{prefix}-{n}"
        key = (worker_index(two, cid), worker_index(other, cid))
        if left.get(key):
            left[key] -= 1
            picked.append(cid)
        n += 1
    return picked


# two cameras per worker, one of each moving to worker 2 when a third worker joins
CAMERAS = pick(3, {(0, 0): 1, (0, 2): 1, (1, 1): 1, (1, 2): 1})


async def _no_sessions(session_id: str) -> None:
    pass


class Server:
    def __init__(self, base: str, db: str, proc: subprocess.Popen[bytes], token: str, admin: dict[str, str]) -> None:
        self.base, self.db, self.proc, self.token, self.admin = base, db, proc, token, admin


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, h264_camera: str) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("live")
    db = str(tmp / "gt.db")
    registry = Registry(db)
    registry.upsert(make_camera(cid, cid, "Jung-gu", LAT, LON, h264_camera) for cid in CAMERAS)
    points = [c.public() for c in registry.list()]
    registry.close()
    access = Access(db, _no_sessions, lambda: points, FAST)
    client, _ = agency(access)
    incident = incident_around(access, client, LON, LAT, 50, nearest=20)  # also opens cameras added later
    token = access.issue_stream_token(incident, client, "officer kim", None, "127.0.0.1")[0]
    city = admin(access)  # resizing the workers is for the city's video admins
    access.close()
    with serve(db, tmp / "server.log") as (base, proc):
        yield Server(base, db, proc, token, city)


@pytest.fixture
async def http(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.base, headers=auth(server.token)) as session:
        await wait_ready(session, server.proc)
        await wait_pictures(session, CAMERAS, 15)
        yield session


async def status(http: aiohttp.ClientSession, cid: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"/api/cameras/{cid}/status") as res:
        return res.status, await res.json()


def has_picture(found: dict[str, Any]) -> bool:
    return found.get("state") == "streaming" and found.get("gop_units", 0) > 0


async def wait_pictures(http: aiohttp.ClientSession, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for cid in ids:
        while not has_picture((found := await status(http, cid))[1]):
            assert time.monotonic() < deadline, (cid, found)
            await asyncio.sleep(0.05)


async def ops_workers(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with http.get("/ops/workers") as res:
        assert res.status == 200
        return list((await res.json())["workers"])


async def metrics(http: aiohttp.ClientSession) -> dict[str, float]:
    async with http.get("/metrics") as res:
        text = await res.text()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))}


def cli(db: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "mediaserver.cli", "cameras", *args, "--db", db], check=True,
                   capture_output=True, timeout=60)  # fmt: skip


async def test_registry_changes_reach_only_the_owning_worker(
    server: Server, http: aiohttp.ClientSession, h264_camera: str, h265_camera: str
) -> None:
    [late] = pick(3, {(1, 1): 1}, prefix="late")
    before = {w["index"]: w["cameras"] for w in await ops_workers(http)}
    untouched = {cid: (await status(http, cid))[1]["connects"] for cid in CAMERAS}
    t0 = time.monotonic()
    cli(server.db, "add", "--id", late, "--name", "Late", "--lat", str(LAT), "--lon", str(LON), "--url", h264_camera)
    while (await status(http, late))[0] != 200 or not has_picture((await status(http, late))[1]):
        assert time.monotonic() - t0 < 10, await status(http, late)
        await asyncio.sleep(0.05)
    print(f"camera added by another process: picture through the front after {time.monotonic() - t0:.2f} s")
    assert (await status(http, late))[1]["worker"] == 1
    await asyncio.sleep(0.6)  # a state poll later: what each worker reports running
    listed = await ops_workers(http)
    assert {w["index"]: w["cameras"] for w in listed} == {0: before[0], 1: before[1] + 1}
    assert [sum(w["states"].values()) for w in listed] == [before[0], before[1] + 1]  # worker 0 never got it

    cli(server.db, "add", "--id", late, "--name", "Late", "--lat", str(LAT), "--lon", str(LON), "--url", h265_camera)
    t0 = time.monotonic()
    while (found := (await status(http, late))[1]).get("codec") != "h265" or not has_picture(found):
        assert time.monotonic() - t0 < 10, found
        await asyncio.sleep(0.05)
    assert {cid: (await status(http, cid))[1]["connects"] for cid in CAMERAS} == untouched  # only it restarted

    with sqlite3.connect(server.db) as db:  # a plain SQL delete from yet another process
        db.execute("DELETE FROM cameras WHERE id=?", (late,))
    t0 = time.monotonic()
    while {w["index"]: w["cameras"] for w in await ops_workers(http)} != before:  # the owner stopped it
        assert time.monotonic() - t0 < 5
        await asyncio.sleep(0.05)
    # gone for the token holder too: 404 from the worker, or 403 once access control has the new camera list
    # (which comes right after the workers have been told)
    assert (await status(http, late))[0] in (403, 404)


async def test_a_dead_workers_cameras_are_worker_down_not_missing(server: Server, http: aiohttp.ClientSession) -> None:
    before = await ops_workers(http)
    assert all(w["cpu_seconds"] > 0 and w["resident_bytes"] > 10e6 for w in before)
    values = await metrics(http)
    assert values['goldentime_worker_restarts_total{worker="worker-0"}'] == before[0]["restarts"]
    assert values['goldentime_cameras{state="worker_down"}'] == 0 and values["goldentime_workers"] == 2
    mine = [cid for cid in CAMERAS if worker_index(worker_ring(2), cid) == 0]

    os.kill(int(before[0]["pid"]), signal.SIGKILL)
    killed = time.monotonic()
    while (listed := await ops_workers(http))[0]["up"]:  # /ops/workers does no RPC: a tight loop is cheap
        assert listed[0]["pid"] in (before[0]["pid"], None), "restarted before it was ever seen down"
        assert time.monotonic() - killed < 5
        await asyncio.sleep(0.01)
    # down (or booting: a worker takes ~0.5 s to import and load its cameras): its cameras are worker_down
    assert listed[0]["states"] == {"worker_down": len(mine)} and listed[0]["cameras"] == len(mine)
    values = await metrics(http)
    assert values['goldentime_cameras{state="worker_down"}'] == len(mine)
    assert values['goldentime_worker_up{worker="worker-0"}'] == 0
    assert values['goldentime_worker_up{worker="worker-1"}'] == 1
    code, found = await status(http, mine[0])
    if not (await ops_workers(http))[0]["up"]:  # still down after the call: it was down during it
        assert code == 200 and found == {"id": mine[0], "state": "worker_down", "codec": "", "worker": 0}, found
    print(f"worker 0 seen down {time.monotonic() - killed:.2f} s after SIGKILL")
    await wait_pictures(http, mine, 10)
    values = await metrics(http)
    assert values['goldentime_worker_restarts_total{worker="worker-0"}'] == before[0]["restarts"] + 1
    assert values['goldentime_cameras{state="worker_down"}'] == 0
    assert values['goldentime_cameras{state="streaming"}'] == len(CAMERAS)


async def resize(http: aiohttp.ClientSession, count: int, admin: dict[str, str]) -> dict[str, Any]:
    async with http.post("/ops/workers", json={"count": count}, headers=admin) as res:
        assert res.status == 200, await res.text()
        return dict(await res.json())


async def watch(http: aiohttp.ClientSession, ids: list[str], stop: asyncio.Event) -> list[tuple[str, Any]]:
    """Every status of these cameras seen until `stop` that is not a live picture."""
    gaps = []
    while not stop.is_set():
        for cid in ids:
            code, found = await status(http, cid)
            if code != 200 or not has_picture(found):
                gaps.append((cid, found))
        await asyncio.sleep(0.02)
    return gaps


async def test_adding_and_removing_a_worker_moves_only_its_share_without_a_gap(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.post("/ops/workers", json={"count": 3}) as res:
        assert res.status == 401  # a stream token is no admin credential (the review resized with none)
    evil = {**server.admin, "Origin": "http://evil.example"}
    async with http.post("/ops/workers", json={"count": 3}, headers=evil) as res:
        assert res.status == 403  # a web page can't resize the server
    async with http.post("/ops/workers", data="count=3", headers=server.admin) as res:
        assert res.status == 403
    before = {cid: (await status(http, cid))[1] for cid in CAMERAS}
    movers = [cid for cid in CAMERAS if worker_index(worker_ring(3), cid) == 2]
    assert len(movers) == 2

    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(http, CAMERAS, stop))
    grown = await resize(http, 3, server.admin)
    stop.set()
    assert await watcher == []  # every camera had a live picture at every look during the handover
    print(f"2 -> 3 workers: {grown['moved']} cameras moved, handover {grown['handover_s']} s")
    assert grown["moved"] == 2 and grown["not_streaming"] == []
    after = {cid: (await status(http, cid))[1] for cid in CAMERAS}
    for cid in CAMERAS:
        if cid in movers:
            assert after[cid]["worker"] == 2
        else:  # the others stayed where they were, never restarted
            assert after[cid]["worker"] == before[cid]["worker"] and after[cid]["connects"] == before[cid]["connects"]
    assert [w["cameras"] for w in grown["workers_now"]] == [1, 1, 2]
    await asyncio.sleep(1.5)  # the old workers stopped the movers: they no longer report them
    assert [sum(w["states"].values()) for w in await ops_workers(http)] == [1, 1, 2]

    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(http, CAMERAS, stop))
    shrunk = await resize(http, 2, server.admin)
    stop.set()
    assert await watcher == []
    assert shrunk["moved"] == 2 and len(await ops_workers(http)) == 2
    for cid in CAMERAS:
        assert (await status(http, cid))[1]["worker"] == worker_index(worker_ring(2), cid)
    values = await metrics(http)
    assert values['goldentime_cameras{state="streaming"}'] == len(CAMERAS) and values["goldentime_workers"] == 2
