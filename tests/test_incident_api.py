"""The incident, token and audit API over HTTP, WHEP enforcement with real aiortc viewers, the attack
matrix, revocation and expiry ending live views server-side, a moving incident, and restart persistence."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers.access import FAST, until, until_true

from mediaserver.cli import main as cli
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress, use_ice_hosts
from signaling.access import ACCESS, Access
from signaling.app import create_app
from signaling.incidents import Incident

CITY_HALL = (126.978, 37.5665)  # [lon, lat]
CAMERAS = [
    {"id": "cam1", "name": "City Hall", "district": "Jung-gu", "lat": 37.5665, "lon": 126.978},
    {"id": "cam2", "name": "Gwanghwamun", "district": "Jongno-gu", "lat": 37.5755, "lon": 126.978},  # 1 km N
]
BASIS = "PIPA art. 25(1)4: emergency, life and safety"
Client = TestClient[Any, Any]


@pytest.fixture
def egress(city_egress: Egress) -> Egress:
    return city_egress


class World:
    """A running front with a police client (owner), a fire client (shared), a welfare client (not shared)
    and an auditor, all speaking HTTP with Basic auth like agency apps."""

    def __init__(self, http: Client, access: Access, egress: Egress) -> None:
        self.http, self.access, self.egress = http, access, egress
        self.viewers: list[Viewer] = []  # closed by the fixture, even when a test fails half-way
        self.creds: dict[str, tuple[str, str]] = {}
        for agency, role in (("police-112", "agency"), ("fire-119", "agency"), ("welfare-seoul", "agency"),
                             ("privacy-office", "auditor")):  # fmt: skip
            client, secret = access.add_client(agency, f"{agency} app", role)
            self.creds[agency] = (client.client_id, secret)

    def basic(self, agency: str, secret: str | None = None) -> dict[str, str]:
        cid, real = self.creds[agency]
        raw = base64.b64encode(f"{cid}:{secret or real}".encode()).decode()
        return {"Authorization": f"Basic {raw}", "X-Operator": f"{agency} desk"}

    async def incident(self, agency: str = "police-112", **body: Any) -> dict[str, Any]:
        doc = {"service": "112-video", "basis": BASIS, "shared_with": ["fire-119"], "until": until(),
               "geometry": {"type": "Point", "coordinates": list(CITY_HALL)}, "radius_m": 500, **body}  # fmt: skip
        res = await self.http.post("/api/incidents", json=doc, headers=self.basic(agency))
        assert res.status == 201, await res.text()
        return dict(await res.json())

    async def token(self, incident_id: str, agency: str = "police-112", **body: Any) -> dict[str, Any]:
        res = await self.http.post(f"/api/incidents/{incident_id}/tokens", json={"operator": "officer kim", **body},
                                   headers=self.basic(agency))  # fmt: skip
        assert res.status == 201, await res.text()
        return dict(await res.json())

    def denials(self) -> list[dict[str, Any]]:
        return self.access.audit.query(event="access.denied")


@pytest.fixture
async def world(egress: Egress, tmp_path: Path) -> AsyncIterator[World]:
    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, db=tmp_path / "gt.db", access=FAST)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        world = World(http, app[ACCESS], egress)
        try:
            yield world
        finally:
            await asyncio.gather(*(v.pc.close() for v in world.viewers), return_exceptions=True)


class Viewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")

    async def offer(self) -> str:
        with use_ice_hosts(["127.0.0.1"]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)


SDP = {"Content-Type": "application/sdp"}


async def watch(w: World, token: str, camera: str = "cam1") -> tuple[Viewer, str]:
    viewer = Viewer()
    w.viewers.append(viewer)
    res = await w.http.post(f"/whep/{camera}", data=await viewer.offer(),
                            headers={**SDP, "Authorization": f"Bearer {token}"})  # fmt: skip
    assert res.status == 201, await res.text()
    await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=await res.text(), type="answer"))
    return viewer, res.headers["Location"]


# -- the API -----------------------------------------------------------------------------------------------------


async def test_incident_lifecycle(world: World) -> None:
    w = world
    inc = await w.incident()
    assert inc["id"].startswith("urn:emergency:uid:incidentid:") and inc["owner"] == "police-112"
    assert inc["scope"] == {"cameras": 1, "nearest_m": 0.0} and inc["open"]
    res = await w.http.get(f"/api/incidents/{inc['id']}/cameras", headers=w.basic("fire-119"))  # shared
    cams = (await res.json())["cameras"]
    assert [c["id"] for c in cams] == ["cam1"] and cams[0]["whep_url"].endswith("/whep/cam1")

    res = await w.http.patch(f"/api/incidents/{inc['id']}", json={"radius_m": 2000}, headers=w.basic("police-112"))
    assert res.status == 400 and (await res.json())["field"] == "radius_m"  # not changeable
    later = until(7200)
    res = await w.http.patch(f"/api/incidents/{inc['id']}", json={"until": later}, headers=w.basic("fire-119"))
    assert res.status == 403 and "owning agency" in (await res.json())["error"]  # extending is the owner's
    res = await w.http.patch(f"/api/incidents/{inc['id']}", json={"until": later}, headers=w.basic("police-112"))
    assert res.status == 200
    res = await w.http.patch(f"/api/incidents/{inc['id']}", json={"shared_with": []}, headers=w.basic("fire-119"))
    assert res.status == 403 and "owning agency" in (await res.json())["error"]

    issued = await w.token(inc["id"], "fire-119")
    assert issued["cameras"][0]["id"] == "cam1" and issued["expires_at"].endswith("Z")
    claims = jwt.decode(issued["token"], options={"verify_signature": False})
    assert claims["incident"] == {"id": inc["id"], "service": "112-video", "agency": "fire-119",
                                  "owner": "police-112", "basis": BASIS}  # fmt: skip
    assert claims["sub"] == "officer kim" and claims["exp"] - claims["iat"] <= 600

    res = await w.http.post(f"/api/incidents/{inc['id']}/close", headers=w.basic("fire-119"))
    assert res.status == 403  # closing is the owner's
    res = await w.http.post(f"/api/incidents/{inc['id']}/close", headers=w.basic("police-112"))
    assert res.status == 200 and (await res.json())["status"] == "closed"
    res = await w.http.post(f"/api/incidents/{inc['id']}/close", headers=w.basic("police-112"))
    assert res.status == 409
    events = [r["event"] for r in w.access.audit.query(incident=inc["id"])]
    assert events[0] == "incident.created" and "token.issued" in events and events[-1] == "incident.closed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"service": "karaoke"}, "service"),
        ({"until": "2001-01-01T00:00:00Z"}, "until"),
        ({"geometry": {"type": "Point", "coordinates": [126.9]}}, "geometry.coordinates"),
        ({"shared_with": "fire-119"}, "shared_with"),
        ({"radius_m": 1e9}, "radius_m"),
    ],
)
async def test_malformed_bodies_name_the_field(world: World, body: dict[str, Any], field: str) -> None:
    doc = {"service": "112-video", "basis": BASIS, "until": until(),
           "geometry": {"type": "Point", "coordinates": list(CITY_HALL)}, **body}  # fmt: skip
    res = await world.http.post("/api/incidents", json=doc, headers=world.basic("police-112"))
    assert res.status == 400
    err = await res.json()
    assert err["field"] == field and err["error"]


async def test_body_limits_and_content_type(world: World) -> None:
    h = world.basic("police-112")
    res = await world.http.post("/api/incidents", data="{}", headers={**h, "Content-Type": "text/plain"})
    assert res.status == 415
    res = await world.http.post(
        "/api/incidents", data=b"{" + b" " * 600_000, headers={**h, "Content-Type": "application/json"}
    )
    assert res.status == 413
    res = await world.http.post("/api/incidents", data=b"{nope", headers={**h, "Content-Type": "application/json"})
    assert res.status == 400 and (await res.json())["field"] == "body"


async def test_oauth_client_credentials_and_jwks(world: World) -> None:
    w = world
    res = await w.http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=w.basic("police-112"))
    assert res.status == 200
    body = await res.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    inc = await w.incident()
    assert (await w.http.get(f"/api/incidents/{inc['id']}", headers=bearer)).status == 200
    cid, secret = w.creds["fire-119"]
    form = {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
    assert (await w.http.post("/oauth/token", data=form)).status == 200
    res = await w.http.post("/oauth/token", data={**form, "client_secret": "guess"})
    assert res.status == 401 and (await res.json())["error"] == "invalid_client"
    res = await w.http.post("/oauth/token", data={"grant_type": "password"})
    assert res.status == 400
    # An API token does not open cameras (audience), and a stream token does not call the API.
    res = await w.http.post("/whep/cam1", data="v=0", headers={**SDP, **bearer})
    assert res.status == 401 and "audience" in (await res.json())["detail"]
    stream = (await w.token(inc["id"]))["token"]
    res = await w.http.get(f"/api/incidents/{inc['id']}", headers={"Authorization": f"Bearer {stream}"})
    assert res.status == 401

    jwks = await (await w.http.get("/.well-known/jwks.json")).json()
    kid = jwt.get_unverified_header(stream)["kid"]
    [jwk] = [k for k in jwks["keys"] if k["kid"] == kid]
    key = jwt.PyJWK(jwk).key
    assert jwt.decode(stream, key, algorithms=["ES256"], audience="goldentime:whep")["jti"]


async def test_audit_api_for_auditors(world: World) -> None:
    w = world
    inc = await w.incident()
    await w.token(inc["id"])
    res = await w.http.get("/api/audit", params={"incident": inc["id"]}, headers=w.basic("privacy-office"))
    assert res.status == 200
    records = (await res.json())["records"]
    assert [r["event"] for r in records] == ["incident.created", "token.issued"]
    assert records[1]["operator"] == "officer kim" and records[1]["basis"] == BASIS and records[1]["remote"]
    res = await w.http.get("/api/audit", params={"agency": "fire-119", "since": until(-60)},
                           headers=w.basic("privacy-office"))  # fmt: skip
    assert all(r["agency"] == "fire-119" for r in (await res.json())["records"])
    res = await w.http.get("/api/audit", params={"since": "yesterday"}, headers=w.basic("privacy-office"))
    assert res.status == 400 and (await res.json())["field"] == "since"
    assert (await w.http.get("/api/audit", headers=w.basic("police-112"))).status == 403
    res = await w.http.get("/api/audit/verify", headers=w.basic("privacy-office"))
    assert (await res.json())["ok"] is True
    assert (await w.http.post("/api/incidents", json={}, headers=w.basic("privacy-office"))).status == 403


# -- the attack matrix -------------------------------------------------------------------------------------------


def forge(access: Access, change: dict[str, Any], key: Any = None, headers: dict[str, Any] | None = None) -> str:
    """A stream token like the server's, with some claims changed, signed with `key` (default: the real one)."""
    signing = access.keys.signing_key()
    now = int(time.time())
    inc = access.incidents.open_incidents()[0]
    claims = {"iss": access.settings.tokens.issuer, "sub": "mallory", "aud": access.settings.tokens.stream_audience,
              "client_id": "gt-x", "iat": now, "nbf": now, "exp": now + 300, "jti": f"j{now}{len(change)}",
              "scope": "whep:view", "incident": {"id": inc.id, "service": inc.service, "agency": inc.owner,
                                                 "owner": inc.owner, "basis": inc.basis}, **change}  # fmt: skip
    head = {"kid": signing.kid, "typ": "at+jwt", **(headers or {})}
    return jwt.encode(claims, key or signing.private, algorithm="ES256", headers=head)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def alg_none(access: Access) -> str:
    good = forge(access, {})
    head = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": access.keys.signing_key().kid}).encode())
    return f"{head}.{good.split('.')[1]}."


def hs256_with_public_key(access: Access) -> str:
    signing = access.keys.signing_key()
    pem = signing.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": signing.kid}).encode())
    body = forge(access, {}).split(".")[1]
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def tampered(access: Access) -> str:
    head, body, sig = forge(access, {}).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "someone else"
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


Attack = Callable[[World], Awaitable[tuple[int, str, Any]]]


async def whep_with(w: World, token: str | None, camera: str = "cam1") -> tuple[int, str, Any]:
    headers = {**SDP, **({"Authorization": f"Bearer {token}"} if token else {})}
    res = await w.http.post(f"/whep/{camera}", data="v=0\r\n", headers=headers)
    return res.status, res.headers.get("WWW-Authenticate", ""), await res.json()


async def _revoked(w: World) -> tuple[int, str, Any]:
    inc = w.access.incidents.open_incidents()[0]
    issued = await w.token(inc.id)
    res = await w.http.delete(f"/api/tokens/{issued['jti']}", headers=w.basic("police-112"))
    assert res.status == 200
    return await whep_with(w, issued["token"])


async def _out_of_scope(w: World) -> tuple[int, str, Any]:
    inc = w.access.incidents.open_incidents()[0]
    return await whep_with(w, (await w.token(inc.id))["token"], "cam2")


async def _closed(w: World) -> tuple[int, str, Any]:
    inc = w.access.incidents.open_incidents()[0]
    token = (await w.token(inc.id))["token"]
    assert (await w.http.post(f"/api/incidents/{inc.id}/close", headers=w.basic("police-112"))).status == 200
    return await whep_with(w, token)


async def _not_shared(w: World) -> tuple[int, str, Any]:
    inc = w.access.incidents.open_incidents()[0]
    res = await w.http.post(f"/api/incidents/{inc.id}/tokens", json={"operator": "x"}, headers=w.basic("welfare-seoul"))
    return res.status, "", await res.json()


async def _unshared_after_issue(w: World) -> tuple[int, str, Any]:
    inc = w.access.incidents.open_incidents()[0]
    token = (await w.token(inc.id, "fire-119"))["token"]
    res = await w.http.patch(f"/api/incidents/{inc.id}", json={"shared_with": []}, headers=w.basic("police-112"))
    assert res.status == 200
    return await whep_with(w, token)


async def _wrong_secret(w: World) -> tuple[int, str, Any]:
    inc = w.access.incidents.open_incidents()[0]
    res = await w.http.post(f"/api/incidents/{inc.id}/tokens", json={"operator": "x"},
                            headers=w.basic("police-112", secret="letmein"))  # fmt: skip
    return res.status, res.headers.get("WWW-Authenticate", ""), await res.json()


def static(make: Callable[[Access], str | None]) -> Attack:
    async def attack(w: World) -> tuple[int, str, Any]:
        return await whep_with(w, make(w.access))

    return attack


OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
ATTACKS: dict[str, tuple[Attack, int, str]] = {
    "no token": (static(lambda a: None), 401, "missing bearer token"),
    "alg none": (static(alg_none), 401, "algorithm not allowed"),
    "HS256 signed with the public key": (static(hs256_with_public_key), 401, "algorithm not allowed"),
    "expired": (static(lambda a: forge(a, {"exp": int(time.time()) - 60})), 401, "expired"),
    "not yet valid": (static(lambda a: forge(a, {"nbf": int(time.time()) + 600})), 401, "not yet valid"),
    "wrong aud": (static(lambda a: forge(a, {"aud": "someone-else"})), 401, "wrong audience"),
    "wrong iss": (static(lambda a: forge(a, {"iss": "https://evil.example/"})), 401, "wrong issuer"),
    "unknown kid": (static(lambda a: forge(a, {}, OTHER_KEY, {"kid": "nope"})), 401, "unknown signing key"),
    "known kid, other key": (static(lambda a: forge(a, {}, OTHER_KEY)), 401, "bad signature"),
    "tampered payload": (static(tampered), 401, "bad signature"),
    "revoked jti": (_revoked, 401, "revoked"),
    "camera out of scope": (_out_of_scope, 403, "not in the incident's scope"),
    "closed incident": (_closed, 403, "incident closed"),
    "agency not shared": (_not_shared, 403, "not shared"),
    "agency unshared after issue": (_unshared_after_issue, 403, "not shared"),
    "wrong client secret": (_wrong_secret, 401, "invalid client credentials"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_is_rejected_and_audited(world: World, name: str) -> None:
    attack, status, words = ATTACKS[name]
    await world.incident()
    before = len(world.denials())
    got, www_authenticate, body = await attack(world)
    text = f"{body.get('error')}: {body.get('detail', '')}"
    assert got == status and words in text, (name, got, body)
    if status == 401:
        assert www_authenticate.startswith("Bearer")
    denials = world.denials()
    assert len(denials) == before + 1
    assert words in denials[-1]["reason"] and denials[-1]["remote"] == "127.0.0.1"
    assert world.egress.sessions == []


# -- live views end server-side ----------------------------------------------------------------------------------


async def test_close_ends_every_live_view_within_a_second(world: World) -> None:
    w = world
    inc = await w.incident(service="112-video")
    viewers = [await watch(w, (await w.token(inc["id"], agency))["token"]) for agency in ("police-112", "fire-119")]
    await until_true(lambda: all(s["frames_sent"] > 0 for s in w.egress.sessions) and len(w.egress.sessions) == 2, 10)
    t0 = time.monotonic()
    res = await w.http.post(f"/api/incidents/{inc['id']}/close", headers=w.basic("police-112"))
    assert (await res.json())["views_ended"] == 2
    elapsed = time.monotonic() - t0
    assert w.egress.sessions == [] and elapsed < 1.0, (w.egress.sessions, elapsed)
    ended = w.access.audit.query(incident=inc["id"], event="view.ended")
    assert len(ended) == 2 and all(r["reason"] == "incident closed" and r["duration_s"] > 0 for r in ended)
    started = w.access.audit.query(incident=inc["id"], event="view.started")
    assert {r["agency"] for r in started} == {"police-112", "fire-119"} and started[0]["operator"] == "officer kim"
    for viewer, _ in viewers:
        await viewer.pc.close()


async def test_revocation_and_window_end_stop_views(world: World) -> None:
    w = world
    inc = await w.incident()
    issued = await w.token(inc["id"])
    viewer, location = await watch(w, issued["token"])
    other = await w.token(inc["id"])
    # PATCH/DELETE only with the token that opened the session
    res = await w.http.delete(location, headers={"Authorization": f"Bearer {other['token']}"})
    assert res.status == 403 and "another token" in (await res.json())["error"]
    res = await w.http.delete(f"/api/tokens/{issued['jti']}", headers=w.basic("welfare-seoul"))
    assert res.status == 403
    res = await w.http.delete(f"/api/tokens/{issued['jti']}", headers=w.basic("police-112"))
    assert (await res.json())["views_ended"] == 1 and w.egress.sessions == []
    await viewer.pc.close()

    short = await w.incident(until=until(1.5))
    viewer, _ = await watch(w, (await w.token(short["id"]))["token"])
    waited = await until_true(lambda: not w.egress.sessions, 4)
    assert waited < 1.5 + 1.0
    # the view's end is audited right after its session closes: wait for the record, not just the session
    await until_true(lambda: bool(w.access.audit.query(incident=short["id"], event="view.ended")), 1.0)
    [ended] = w.access.audit.query(incident=short["id"], event="view.ended")
    assert ended["reason"] in ("incident window ended", "token expired")  # the token is capped at `until`
    # the token's whole-second exp may end the view a sweep before the window closes the incident
    await until_true(lambda: bool(w.access.audit.query(incident=short["id"], event="incident.closed")), 1.5)
    assert w.access.audit.query(incident=short["id"], event="incident.closed")[0]["reason"] == "window ended"
    await viewer.pc.close()


async def test_viewer_delete_is_audited_with_duration(world: World) -> None:
    w = world
    inc = await w.incident()
    token = (await w.token(inc["id"]))["token"]
    viewer, location = await watch(w, token)
    await asyncio.sleep(0.3)
    assert (await w.http.delete(location, headers={"Authorization": f"Bearer {token}"})).status == 200
    [ended] = w.access.audit.query(incident=inc["id"], event="view.ended")
    assert ended["reason"] == "viewer ended" and ended["duration_s"] >= 0.3 and ended["camera"] == "cam1"
    await viewer.pc.close()


async def test_moving_incident_moves_its_scope_and_guards_the_photo(world: World) -> None:
    w = world
    photo = base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg").decode()
    inc = await w.incident(service="vulnerable", radius_m=300, photo={"content_type": "image/jpeg", "data": photo})
    token = (await w.token(inc["id"]))["token"]
    viewer, _ = await watch(w, token, "cam1")
    assert (await whep_with(w, token, "cam2"))[0] == 403
    moved = {"geometry": {"type": "Point", "coordinates": [126.978, 37.5755]}}  # the phone is now at cam2
    res = await w.http.patch(f"/api/incidents/{inc['id']}", json=moved, headers=w.basic("police-112"))
    assert res.status == 200 and (await res.json())["scope"]["cameras"] == 1
    assert w.egress.sessions == []  # cam1's view ended with the move
    [ended] = w.access.audit.query(incident=inc["id"], event="view.ended")
    assert ended["reason"] == "camera left the incident's scope"
    viewer2, _ = await watch(w, token, "cam2")  # the same token now opens cam2
    res = await w.http.get(f"/api/incidents/{inc['id']}/cameras", headers=w.basic("police-112"))
    assert [c["id"] for c in (await res.json())["cameras"]] == ["cam2"]

    res = await w.http.get(f"/api/incidents/{inc['id']}/photo", headers=w.basic("fire-119"))
    assert res.status == 200 and await res.read() == base64.b64decode(photo)
    res = await w.http.get(f"/api/incidents/{inc['id']}/photo", headers=w.basic("welfare-seoul"))
    assert res.status == 403 and b"fake-jpeg" not in await res.read()
    res = await w.http.get(f"/api/incidents/{inc['id']}", headers=w.basic("welfare-seoul"))
    assert res.status == 403
    for v in (viewer, viewer2):
        await v.pc.close()


async def test_only_the_owner_extends_and_never_past_the_maximum_window(world: World) -> None:
    w = world
    inc = await w.incident()
    url = f"/api/incidents/{inc['id']}"
    res = await w.http.patch(url, json={"until": until(7200)}, headers=w.basic("fire-119"))
    assert res.status == 403 and (await res.json())["error"] == "only the owning agency may change its window"
    for hours in (12, 20, 23.9):  # again and again: each extension stays inside the window from creation
        res = await w.http.patch(url, json={"until": until(hours * 3600)}, headers=w.basic("police-112"))
        assert res.status == 200, await res.text()
    res = await w.http.patch(url, json={"until": until(24.1 * 3600)}, headers=w.basic("police-112"))
    err = await res.json()
    assert res.status == 400 and err["field"] == "until" and "maximum window" in err["error"]
    res = await w.http.post("/api/incidents", headers=w.basic("police-112"), json={
        "service": "112-video", "basis": BASIS, "until": until(25 * 3600),
        "geometry": {"type": "Point", "coordinates": list(CITY_HALL)}})  # fmt: skip
    assert res.status == 400 and (await res.json())["field"] == "until"
    updates = w.access.audit.query(incident=inc["id"], event="incident.updated")
    assert len(updates) == 3
    first, last = updates[0]["detail"]["changes"]["until"], updates[-1]["detail"]["changes"]["until"]
    assert first["old"] == inc["until"] and last["new"] == (await (await w.http.get(
        url, headers=w.basic("police-112"))).json())["until"]  # fmt: skip
    assert updates[1]["detail"]["changes"]["until"]["old"] == first["new"]


async def test_the_maximum_window_is_a_setting(egress: Egress, tmp_path: Path) -> None:
    settings = dataclasses.replace(FAST, incident_window_s=3600)
    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, db=tmp_path / "gt.db", access=settings)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        w = World(http, app[ACCESS], egress)
        doc = {"service": "112-video", "basis": BASIS, "until": until(7200),
               "geometry": {"type": "Point", "coordinates": list(CITY_HALL)}}  # fmt: skip
        res = await http.post("/api/incidents", json=doc, headers=w.basic("police-112"))
        assert res.status == 400 and (await res.json())["field"] == "until"
        inc = await w.incident(until=until(1800))
        res = await http.patch(f"/api/incidents/{inc['id']}", json={"until": until(3700)},
                               headers=w.basic("police-112"))  # fmt: skip
        assert res.status == 400 and (await res.json())["field"] == "until"


async def test_a_moving_point_moves_by_its_owner_only_and_only_so_far(world: World) -> None:
    w = world
    inc = await w.incident(service="vulnerable", radius_m=300)
    url = f"/api/incidents/{inc['id']}"
    near = {"geometry": {"type": "Point", "coordinates": [126.978, 37.5755]}}  # 1 km north: cam2
    res = await w.http.patch(url, json=near, headers=w.basic("fire-119"))
    assert res.status == 403 and (await res.json())["error"] == "only the owning agency may move it"
    res = await w.http.patch(url, json=near, headers=w.basic("police-112"))
    assert res.status == 200 and (await res.json())["geometry"]["coordinates"] == [126.978, 37.5755]
    stored = w.access.incidents.get(inc["id"])
    assert stored is not None and stored.moved_at is not None  # the next step's allowance counts from now
    busan = {"geometry": {"type": "Point", "coordinates": [129.075, 35.18]}}  # 325 km away a second later
    res = await w.http.patch(url, json=busan, headers=w.basic("police-112"))
    err = await res.json()
    assert res.status == 400 and err["field"] == "geometry" and "at most" in err["error"], err
    res = await w.http.get(f"/api/incidents/{inc['id']}/cameras", headers=w.basic("police-112"))
    assert [c["id"] for c in (await res.json())["cameras"]] == ["cam2"]  # it stayed where it was
    [moved] = w.access.audit.query(incident=inc["id"], event="incident.updated")
    change = moved["detail"]["changes"]["geometry"]
    assert change["old"]["coordinates"] == list(CITY_HALL) and change["new"]["coordinates"] == [126.978, 37.5755]
    assert moved["detail"]["cameras"] == 1


# -- restart -----------------------------------------------------------------------------------------------------


async def test_restart_keeps_incidents_clients_keys_and_audit(egress: Egress, tmp_path: Path) -> None:
    db = tmp_path / "gt.db"
    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, db=db, access=FAST)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        w = World(http, app[ACCESS], egress)
        inc = await w.incident()
        issued = await w.token(inc["id"])
        jwks = await (await http.get("/.well-known/jwks.json")).json()
        viewer, _ = await watch(w, issued["token"])
    await viewer.pc.close()
    assert egress.sessions == []  # shutdown ended the view (and audited it)
    creds = w.creds

    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, db=db, access=FAST)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        w2 = World.__new__(World)
        w2.http, w2.access, w2.egress, w2.creds, w2.viewers = http, app[ACCESS], egress, creds, []
        res = await http.get(f"/api/incidents/{inc['id']}", headers=w2.basic("fire-119"))  # same credentials
        assert res.status == 200 and (await res.json())["open"]
        assert await (await http.get("/.well-known/jwks.json")).json() == jwks
        viewer, _ = await watch(w2, issued["token"])  # a token from before the restart still works
        await viewer.pc.close()
        ended = w2.access.audit.query(incident=inc["id"], event="view.ended")
        assert ended[0]["reason"] == "server shutdown"
    assert cli(["audit", "verify", "--db", str(db)]) == 0

    import sqlite3

    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("UPDATE audit SET record=replace(record, 'officer kim', 'officer lee') WHERE event='token.issued'")
    con.commit()
    con.close()
    assert cli(["audit", "verify", "--db", str(db)]) == 1


def test_cli_clients_add_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "c.db")
    assert cli(["clients", "add", "--agency", "police-112", "--name", "112 CAD", "--json", "--db", db]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["client_id"].startswith("gt-") and len(out["client_secret"]) > 30
    assert cli(["clients", "add", "--agency", "Bad Agency", "--name", "x", "--db", db]) == 2
    assert cli(["keys", "rotate", "--db", db]) == 0 and cli(["keys", "rotate", "--db", db]) == 0
    assert cli(["audit", "verify", "--db", db]) == 0
    out_file = tmp_path / "audit.csv"
    assert cli(["audit", "export", "--format", "csv", "--out", str(out_file), "--db", db]) == 0
    assert out_file.read_text().count("\n") == 4  # header + client.added + 2 key.rotated


def test_a_moving_point_may_go_as_far_as_a_car_since_its_last_move() -> None:
    from signaling.incidents import MAX_SPEED_MPS, MOVE_SLACK_M, ValidationError, parse_create, parse_patch

    t0 = 1_900_000_000.0
    spec = parse_create({"service": "vulnerable", "basis": BASIS, "until": until_at(t0 + 3600),
                         "geometry": {"type": "Point", "coordinates": list(CITY_HALL)}}, now=t0)  # fmt: skip
    incident = Incident("urn:x", spec.service, spec.basis, "police-112", "gt-1", (), spec.geometry, spec.radius_m,
                        spec.nearest, spec.buffer_m, spec.until, created_at=t0, updated_at=t0)  # fmt: skip
    east = MOVE_SLACK_M + MAX_SPEED_MPS * 600  # metres allowed 10 minutes after creation
    lon_per_m = 1 / (111_195 * 0.7923)

    def to(metres: float) -> dict[str, Any]:
        return {"geometry": {"type": "Point", "coordinates": [CITY_HALL[0] + metres * lon_per_m, CITY_HALL[1]]}}

    assert parse_patch(to(east * 0.99), incident, now=t0 + 600)["geometry"]["type"] == "Point"
    with pytest.raises(ValidationError):
        parse_patch(to(east * 1.01), incident, now=t0 + 600)
    moved = dataclasses.replace(incident, moved_at=t0 + 590)  # the clock restarts at each move
    with pytest.raises(ValidationError):
        parse_patch(to(east * 0.99), moved, now=t0 + 600)


def until_at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
