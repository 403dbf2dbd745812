"""Who may know about which cameras: the camera list and a camera's status are scoped like video (a client
sees what its agency's open incidents cover, admins every camera, auditors none), and an id outside what the
caller may see answers 403 whether it exists or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, admin, agency, auth, basic, incident_around

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS
from signaling.app import create_app

CAMERAS: list[dict[str, Any]] = [
    {"id": "cam1", "name": "Gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97},
    {"id": "far", "name": "Far", "district": "Nowon-gu", "lat": 37.65, "lon": 127.06},
]

NO_HUBS: dict[str, Hub] = {}


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    local = LocalWorkerClient(Egress(NO_HUBS.get))  # no worker: every registered camera's status is "unknown"
    app = create_app(local, lambda: CAMERAS, access=FAST, ops=local, web_dir=None)
    app[ACCESS].refresh_cameras()
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def listed(client: TestClient[Any, Any], headers: dict[str, str]) -> tuple[int, Any]:
    res = await client.get("/api/cameras", headers=headers)
    return res.status, await res.json()


async def status(client: TestClient[Any, Any], camera: str, headers: dict[str, str]) -> int:
    return (await client.get(f"/api/cameras/{camera}/status", headers=headers)).status


async def test_a_client_sees_only_what_its_agencys_open_incidents_cover(client: TestClient[Any, Any]) -> None:
    access = client.app[ACCESS]
    police, secret = agency(access, "police-112")
    fire, fire_secret = agency(access, "fire-119")
    other, other_secret = agency(access, "coast-guard")
    p, f, o = basic(police.client_id, secret), basic(fire.client_id, fire_secret), basic(other.client_id, other_secret)
    assert await listed(client, p) == (200, [])  # no incident: no camera of the city (was: every camera)
    incident = incident_around(access, police, 126.97, 37.56, 50, shared_with=["fire-119"])
    code, cameras = await listed(client, p)
    assert code == 200 and [c["id"] for c in cameras] == ["cam1"] and cameras[0]["incidents"] == [incident.id]
    assert [c["id"] for c in (await listed(client, f))[1]] == ["cam1"]  # shared with fire-119
    assert (await listed(client, o))[1] == []

    assert await status(client, "cam1", p) == 404  # may know it: registered, on no worker here
    assert await status(client, "far", p) == 403  # out of scope (was: 404, city-wide)
    assert await status(client, "nope", p) == 403  # unknown ids answer the same
    assert await status(client, "cam1", o) == 403

    await access.close_incident(incident, police, "closed")
    assert (await listed(client, p))[1] == [] and await status(client, "cam1", p) == 403


async def test_auditors_see_no_camera_and_admins_every_one(client: TestClient[Any, Any]) -> None:
    access = client.app[ACCESS]
    auditor, secret = agency(access, "privacy-office", "auditor")
    a = basic(auditor.client_id, secret)
    code, body = await listed(client, a)
    assert code == 403 and body["error"] == "auditors read the audit log only"
    assert await status(client, "cam1", a) == 403
    city = admin(access)
    code, cameras = await listed(client, city)
    assert code == 200 and [c["id"] for c in cameras] == ["cam1", "far"]
    assert await status(client, "far", city) == 404 and await status(client, "nope", city) == 404
    refused = [r for r in access.audit.all() if r["event"] == "access.denied"]
    assert [r["detail"]["path"] for r in refused] == ["/api/cameras", "/api/cameras/cam1/status"]


async def test_a_stream_token_cannot_tell_which_cameras_exist(client: TestClient[Any, Any]) -> None:
    access = client.app[ACCESS]
    police, _ = agency(access)
    incident = incident_around(access, police, 126.97, 37.56, 50)
    token = auth(access.issue_stream_token(incident, police, "officer kim", None, "127.0.0.1")[0])
    assert await status(client, "far", token) == 403 and await status(client, "nope", token) == 403
    for camera in ("far", "nope"):  # WHEP and snapshots: 403 before 404
        res = await client.post(f"/whep/{camera}", data="v=0", headers={**token, "Content-Type": "application/sdp"})
        assert res.status == 403, camera
        assert (await client.get(f"/api/cameras/{camera}/snapshot", headers=token)).status == 403
    assert [c["id"] for c in (await listed(client, token))[1]] == ["cam1"]
