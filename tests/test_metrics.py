"""Metrics and ops endpoints: the Prometheus text format, the scrape allow-list, readiness, camera status
(authenticated, never the URL), and the worker RPC's secret."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, admin, agency, auth, basic, grant

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.cluster.worker_rpc import SECRET_HEADER, create_rpc_app
from mediaserver.metrics import Exposition, escape_label, render, sample_worker
from mediaserver.registry import make_camera
from mediaserver.worker import Worker, WorkerSettings
from signaling.access import ACCESS
from signaling.app import create_app
from signaling.ops_api import OpsSettings, allowed

# One line of the text format: name, optional {labels}, value.
SAMPLE_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? \S+$')


def test_label_values_are_escaped() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    out = Exposition()
    out.family("x_total", "counter", "Help with \\ and\nnewline.", [({"kind": 'we"ird\n'}, 3), ({}, 0.5)])
    assert out.text().splitlines() == [
        "# HELP x_total Help with \\\\ and\\nnewline.",
        "# TYPE x_total counter",
        'x_total{kind="we\\"ird\\n"} 3',
        "x_total 0.5",
    ]


def check_exposition(text: str) -> dict[str, float]:
    """Every family has HELP then TYPE before its samples, each once; returns sample -> value."""
    seen: set[str] = set()
    values: dict[str, float] = {}
    lines = text.splitlines()
    assert text.endswith("\n")
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in seen and lines[i + 1].startswith(f"# TYPE {name} ")
            seen.add(name)
        elif not line.startswith("#"):
            assert SAMPLE_LINE.match(line), line
            assert line.split("{")[0].split(" ")[0] in seen
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def fake_sample(name: str, streaming: int, frames: int) -> dict[str, Any]:
    sample = sample_worker(None, name)
    sample.update(cameras={"streaming": streaming, "backoff": 1}, frames=frames, errors={"stalled": 2})
    sample["gop_age"] = {"buckets": [0, 1, 2, 2, 2, 2, 2], "count": 2, "sum": 1.5, "max": 1.0}
    return sample


def test_render_aggregates_gauges_and_labels_counters_by_worker() -> None:
    values = check_exposition(render([fake_sample("worker-0", 3, 100), fake_sample("worker-1", 4, 50)]))
    assert values['goldentime_cameras{state="streaming"}'] == 7
    assert values['goldentime_cameras{state="backoff"}'] == 2
    assert values['goldentime_cameras{state="connecting"}'] == 0  # every state present: no vanishing series
    assert values['goldentime_cameras{state="worker_down"}'] == 0
    assert values['goldentime_frames_total{worker="worker-0"}'] == 100
    assert values['goldentime_rtsp_errors_total{worker="worker-1",kind="stalled"}'] == 2
    assert values['goldentime_gop_cache_age_cameras{le="+Inf"}'] == 4
    assert values["goldentime_gop_cache_age_seconds_avg"] == 0.75
    assert values["goldentime_workers"] == 2
    assert values['goldentime_worker_resident_bytes{worker="worker-1"}'] > 1e6


def test_a_silent_workers_cameras_are_worker_down_and_restarts_counted() -> None:
    workers = [
        {"name": "worker-0", "up": True, "restarts": 0, "cameras": 3},
        {"name": "worker-1", "up": False, "restarts": 2, "cameras": 5},  # dead: no pid, no usage
        {"name": "worker-2", "up": True, "restarts": 1, "cameras": 4, "cpu_seconds": 7.5, "resident_bytes": 9e7},
    ]  # worker-2 is up but did not answer the scrape (hung): its usage comes from /proc via the supervisor
    values = check_exposition(render([fake_sample("worker-0", 3, 100)], workers=workers))
    assert (
        values['goldentime_cameras{state="worker_down"}'] == 9 and values['goldentime_cameras{state="streaming"}'] == 3
    )
    assert (
        values['goldentime_worker_up{worker="worker-0"}'] == 1
        and values['goldentime_worker_up{worker="worker-2"}'] == 0
    )
    assert values['goldentime_worker_restarts_total{worker="worker-1"}'] == 2
    assert values['goldentime_worker_cameras{worker="worker-1"}'] == 5
    assert values['goldentime_worker_cpu_seconds_total{worker="worker-2"}'] == 7.5
    assert 'goldentime_worker_cpu_seconds_total{worker="worker-1"}' not in values
    assert values["goldentime_workers"] == 1


def test_scrape_allow_list() -> None:
    assert allowed("127.0.0.1", ["127.0.0.0/8", "::1/128"]) and allowed("::1", ["127.0.0.0/8", "::1/128"])
    assert not allowed("10.1.2.3", ["127.0.0.0/8"]) and allowed("10.1.2.3", ["10.0.0.0/8"])
    assert not allowed(None, ["0.0.0.0/0"]) and not allowed("garbage", ["0.0.0.0/0"])


@pytest.fixture
async def worker(h264_camera: str) -> AsyncIterator[Worker]:
    worker = Worker(WorkerSettings(ice_hosts=["127.0.0.1"]))
    worker.add_camera(make_camera("cam1", "Gate", "Jung-gu", 37.56, 126.97, h264_camera.replace("//", "//u:pw@")))
    async with asyncio.timeout(10):
        while not worker.hubs["cam1"].gop():
            await asyncio.sleep(0.05)
    yield worker
    await worker.stop()


CAMERAS = [{"id": "cam1", "name": "Gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97},
           {"id": "far", "name": "Far", "district": "Gangnam-gu", "lat": 37.49, "lon": 127.03}]  # fmt: skip


async def ops_client(worker: Worker, allow: list[str]) -> TestClient[Any, Any]:
    local = LocalWorkerClient(worker.egress, worker)
    app = create_app(local, lambda: CAMERAS, access=FAST, ops=local, ops_settings=OpsSettings(metrics_allow=allow))
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_ops_endpoints_in_process(worker: Worker) -> None:
    client = await ops_client(worker, ["127.0.0.1/32"])
    try:
        assert (await client.get("/healthz")).status == 200
        res = await client.get("/readyz")
        assert res.status == 200 and (await res.json())["ready"] is True
        res = await client.get("/metrics?camera=cam1&camera=nope")
        assert res.status == 200 and res.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        values = check_exposition(await res.text())
        assert values['goldentime_cameras{state="streaming"}'] == 1
        assert values['goldentime_frames_total{worker="0"}'] > 0
        assert values['goldentime_camera_streaming{camera="cam1"}'] == 1
        assert 0 <= values['goldentime_camera_gop_age_seconds{camera="cam1"}'] < 2
        assert not any('camera="nope"' in key for key in values)
        plain = check_exposition(await (await client.get("/metrics")).text())
        assert not any("camera=" in key for key in plain)  # per-camera series only when asked for

        token = grant(client.app[ACCESS], CAMERAS[0])
        assert (await client.get("/api/cameras/cam1/status")).status == 401
        res = await client.get("/api/cameras/cam1/status", headers=auth(token))
        status = await res.json()
        assert res.status == 200 and status["state"] == "streaming" and status["codec"] == "h264"
        assert status["units"] > 0 and status["gop_age_s"] is not None and status["viewers"] == 0
        assert "rtsp" not in str(status) and "pw" not in str(status)
        assert (await client.get("/api/cameras/far/status", headers=auth(token))).status == 403  # outside scope
        assert (await client.get("/api/cameras/nope/status", headers=auth(token))).status == 403  # unknown: the same
        app_client, secret = agency(client.app[ACCESS], "fire-119")  # no incident: no camera of the city
        right, wrong = basic(app_client.client_id, secret), basic(app_client.client_id, "nope")
        assert (await client.get("/api/cameras/cam1/status", headers=right)).status == 403
        assert (await client.get("/api/cameras/cam1/status", headers=wrong)).status == 401
        city = admin(client.app[ACCESS])  # the city's video admins see every camera
        assert (await client.get("/api/cameras/far/status", headers=city)).status == 404  # registered, not ingested
        assert (await client.get("/api/cameras/cam1/status", headers=city)).status == 200
    finally:
        await client.close()


async def test_metrics_refused_outside_the_allow_list(worker: Worker) -> None:
    client = await ops_client(worker, ["10.0.0.0/8"])
    try:
        assert (await client.get("/metrics")).status == 403
        assert (await client.get("/ops/workers")).status == 403
        assert (await client.get("/healthz")).status == 200  # probes stay open
    finally:
        await client.close()


async def test_worker_rpc_needs_the_secret(worker: Worker) -> None:
    async with TestClient(TestServer(create_rpc_app(worker, "s3cret", "worker-0"), host="127.0.0.1")) as client:
        assert (await client.get("/state")).status == 403
        assert (await client.get("/state", headers={SECRET_HEADER: "wrong"})).status == 403
        res = await client.get("/state", headers={SECRET_HEADER: "s3cret"})
        assert res.status == 200 and (await res.json())["cameras"]["cam1"][0] == "streaming"
        res = await client.post("/close", json={"session_id": "x"}, headers={SECRET_HEADER: "s3cret"})
        assert res.status == 409 and (await res.json())["error"] == "unknown_session"
