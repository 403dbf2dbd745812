"""Quotas: per-token and per-client session caps (parallel offers included), per-client rate limits on minting
tokens and creating incidents; each refusal a 429 with Retry-After and an audit record. The defaults leave room
for an operator's 16-tile wall at two profiles."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, agency, auth, basic, incident_around, until
from helpers.feed import Unit, feed, make_clip, read_units
from helpers.viewers import Viewer

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS, Access
from signaling.app import create_app
from signaling.quotas import Quotas, QuotaSettings, TokenBucket

CAMERAS: list[dict[str, Any]] = [{"id": "cam1", "name": "Gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97}]
SMALL = QuotaSettings(sessions_per_token=2, sessions_per_client=3, mint_burst=3, mint_per_s=0.01,
                      incident_burst=2, incident_per_s=0.01)  # fmt: skip


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=2, gop=25))


@pytest.fixture
async def served(units: list[Unit]) -> AsyncIterator[tuple[TestClient[Any, Any], Egress]]:
    hub = Hub("cam1")
    task = asyncio.create_task(feed(hub, units))
    egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, access=dataclasses.replace(FAST, quotas=SMALL))
    app[ACCESS].refresh_cameras()
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client, egress
    finally:
        task.cancel()
        await egress.close_all()


def stream_token(access: Access, client: Any, incident: Any) -> dict[str, str]:
    return auth(access.issue_stream_token(incident, client, "officer kim", None, "127.0.0.1")[0])


async def offer(client: TestClient[Any, Any], token: dict[str, str], viewers: list[Viewer]) -> Any:
    viewer = Viewer()
    viewers.append(viewer)
    sdp = await viewer.offer()
    return await client.post("/whep/cam1", data=sdp, headers={**token, "Content-Type": "application/sdp"})


def refusals(access: Access) -> list[dict[str, Any]]:
    return [r for r in access.audit.all() if r["event"] == "access.denied" and r["detail"]["status"] == 429]


async def test_session_caps_per_token_and_per_client(served: tuple[TestClient[Any, Any], Egress]) -> None:
    client, egress = served
    access = client.app[ACCESS]
    police, _ = agency(access)
    incident = incident_around(access, police, 126.97, 37.56, 50)
    first, second = stream_token(access, police, incident), stream_token(access, police, incident)
    viewers: list[Viewer] = []
    try:
        results = await asyncio.gather(*(offer(client, first, viewers) for _ in range(4)))  # all at once
        assert sorted(r.status for r in results) == [201, 201, 429, 429]  # offers in flight count too
        refused = next(r for r in results if r.status == 429)
        body = await refused.json()
        assert body["error"] == "too many sessions for this token" and int(refused.headers["Retry-After"]) >= 1
        res = await offer(client, second, viewers)  # another token of the same client: its third session
        assert res.status == 201
        res = await offer(client, second, viewers)
        assert res.status == 429 and (await res.json())["error"] == "too many sessions for this client"
        assert len(egress.sessions) == 3  # refused before the worker spent anything

        location = next(r.headers["Location"] for r in results if r.status == 201)
        assert (await client.delete(location, headers=first)).status == 200  # a view ended: room again
        assert (await offer(client, first, viewers)).status == 201

        records = refusals(access)
        assert len(records) == 3 and all(r["client_id"] == police.client_id and r["camera"] == "cam1" for r in records)
        assert {r["reason"].split(":")[0] for r in records} == {"too many sessions for this token",
                                                                "too many sessions for this client"}  # fmt: skip
    finally:
        for viewer in viewers:
            await viewer.pc.close()


async def test_minting_and_incident_creation_are_rate_limited_per_client(
    served: tuple[TestClient[Any, Any], Egress],
) -> None:
    client, _ = served
    access = client.app[ACCESS]
    police, secret = agency(access)
    fire, fire_secret = agency(access, "fire-119")
    p = basic(police.client_id, secret)
    body = {"service": "112-video", "basis": "PIPA art. 25(1)4", "until": until(), "radius_m": 50,
            "geometry": {"type": "Point", "coordinates": [126.97, 37.56]}}  # fmt: skip
    created = [await client.post("/api/incidents", json=body, headers=p) for _ in range(3)]
    assert [r.status for r in created] == [201, 201, 429]
    assert (await created[2].json())["error"] == "incident rate limit" and int(created[2].headers["Retry-After"]) > 1
    f = basic(fire.client_id, fire_secret)
    assert (await client.post("/api/incidents", json=body, headers=f)).status == 201  # another client: its own

    url = f"/api/incidents/{(await created[0].json())['id']}/tokens"
    minted = [await client.post(url, json={"operator": "officer kim"}, headers=p) for _ in range(3)]
    assert [r.status for r in minted] == [201, 201, 201]
    res = await client.post(url, json={"operator": "officer kim"}, headers=p)
    assert res.status == 429 and (await res.json())["error"] == "token rate limit" and "Retry-After" in res.headers
    res = await client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=p)
    assert res.status == 429  # API tokens draw on the same bucket
    records = refusals(access)
    reasons = [r["reason"].split(":")[0] for r in records]
    assert reasons == ["incident rate limit", "token rate limit", "token rate limit"]
    assert all(r["client_id"] == police.client_id and r["agency"] == "police-112" for r in records)


def test_the_defaults_hold_a_video_wall() -> None:
    live: dict[str, int] = {"token": 0, "client": 0}
    quotas = Quotas(QuotaSettings(), lambda jti, client: (live["token"], live["client"]))
    for _ in range(32):  # 16 tiles x 2 profiles, then every tile reconnecting once before its old session ends
        with quotas.reserve_session("jti", "client"):
            live["token"] += 1
            live["client"] += 1
    for _ in range(32):
        quotas.reserve_session("jti", "client").__exit__()
        live["token"] += 1
        live["client"] += 1
    assert live["token"] == 64 and QuotaSettings().sessions_per_client >= 4 * live["token"]


def test_token_bucket_refills() -> None:
    now = [0.0]
    bucket = TokenBucket(2, 0.5, clock=lambda: now[0])
    assert bucket.take("a") == 0 and bucket.take("a") == 0 and bucket.take("a") == pytest.approx(2.0)
    assert bucket.take("b") == 0  # per key
    now[0] = 2.0
    assert bucket.take("a") == 0 and bucket.take("a") > 0
