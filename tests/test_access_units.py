"""Unit tests of the access layer's modules: clients, keys, tokens, scope, incidents, audit, views."""

from __future__ import annotations

import asyncio
import io
import json
import math
import sqlite3
import time
from pathlib import Path

import jwt
import numpy as np
import pytest
from helpers.access import until

from signaling.audit import AuditLog, export
from signaling.clients import ClientError, Clients, check_secret, hash_secret
from signaling.db import connect
from signaling.incidents import Incidents, ValidationError, parse_create, parse_patch
from signaling.keys import KeyStore
from signaling.scope import CameraIndex, Projection, ScopeIndex
from signaling.tokens import TokenError, Tokens, TokenSettings
from signaling.views import View, ViewRegistry


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    return connect(tmp_path / "gt.db")


# -- clients -----------------------------------------------------------------------------------------------------


def test_secret_hash_is_salted_and_checked_in_constant_time() -> None:
    a, b = hash_secret("s3cret", n=16), hash_secret("s3cret", n=16)
    assert a != b and a.startswith("scrypt$16$") and "s3cret" not in a
    assert check_secret("s3cret", a) and not check_secret("s3creT", a) and not check_secret("x", "garbage")


def test_clients_add_and_authenticate(db: sqlite3.Connection) -> None:
    clients = Clients(db, scrypt_n=16)
    client, secret = clients.add("police-112", "112 CAD")
    assert client.client_id.startswith("gt-") and len(secret) >= 40
    stored = db.execute("SELECT secret_hash FROM clients").fetchone()[0]
    assert secret not in stored
    assert clients.authenticate(client.client_id, secret) == client
    assert clients.authenticate(client.client_id, secret) == client  # cached path
    assert clients.authenticate(client.client_id, secret + "x") is None
    assert clients.authenticate("gt-nobody", secret) is None
    with pytest.raises(ClientError) as err:
        clients.add("Police 112!", "x")
    assert err.value.field == "agency"
    with pytest.raises(ClientError):
        clients.add("police-112", "x", role="root")


async def test_authenticate_async(db: sqlite3.Connection) -> None:
    clients = Clients(db, scrypt_n=16)
    client, secret = clients.add("fire-119", "119 dispatch", "agency")
    assert await clients.authenticate_async(client.client_id, secret) == client
    assert await clients.authenticate_async(client.client_id, "wrong") is None


# -- keys --------------------------------------------------------------------------------------------------------


def test_key_rotation_publishes_ahead_and_retires_after_tokens_expire(db: sqlite3.Connection) -> None:
    keys = KeyStore(db, publish_ahead_s=0.2, retain_s=0.4)
    first = keys.signing_key()  # the first key is active at once
    assert first.state == "active" and [k["kid"] for k in keys.jwks()["keys"]] == [first.kid]
    nxt = keys.rotate()
    assert nxt.state == "next"
    assert {k["kid"] for k in keys.jwks()["keys"]} == {first.kid, nxt.kid}  # published before use
    assert keys.signing_key().kid == first.kid  # not yet signing
    time.sleep(0.25)
    assert keys.signing_key().kid == nxt.kid  # promoted
    assert first.kid in {k["kid"] for k in keys.jwks()["keys"]}  # retired but tokens may still be live
    time.sleep(0.45)
    keys.refresh()
    assert [k["kid"] for k in keys.jwks()["keys"]] == [nxt.kid]
    assert keys.public_key(first.kid) is None
    jwk = keys.jwks()["keys"][0]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256" and "d" not in jwk


def test_keys_survive_a_restart(tmp_path: Path) -> None:
    kid = KeyStore(connect(tmp_path / "k.db")).signing_key().kid
    assert KeyStore(connect(tmp_path / "k.db")).signing_key().kid == kid


# -- tokens ------------------------------------------------------------------------------------------------------


def test_token_claims_and_verification(db: sqlite3.Connection) -> None:
    keys = KeyStore(db)
    tokens = Tokens(db, keys, TokenSettings(leeway_s=0))
    token, claims = tokens.issue("aud-a", "officer", "gt-1", "police-112", 60, {"scope": "whep:view"})
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": keys.signing_key().kid}
    for name in ("iss", "sub", "aud", "client_id", "iat", "nbf", "exp", "jti", "scope"):
        assert name in claims
    assert tokens.verify(token, "aud-a")["jti"] == claims["jti"]
    with pytest.raises(TokenError, match="audience"):
        tokens.verify(token, "aud-b")
    assert tokens.revoke(claims["jti"]) and not tokens.revoke(claims["jti"])
    with pytest.raises(TokenError, match="revoked"):
        tokens.verify(token, "aud-a")
    with pytest.raises(TokenError, match="malformed"):
        tokens.verify("not-a-jwt", "aud-a")


# -- scope -------------------------------------------------------------------------------------------------------


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def seoul(n: int, seed: int = 1) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(seed)
    lats, lons = rng.uniform(37.43, 37.70, n), rng.uniform(126.76, 127.18, n)
    return [(f"c{i}", float(a), float(o)) for i, (a, o) in enumerate(zip(lats, lons, strict=True))]


def test_near_point_matches_brute_force_haversine() -> None:
    points = seoul(20_000)
    index = CameraIndex(points)
    lon, lat = 126.9780, 37.5665
    hits = index.near_point(lon, lat, 500, None)
    brute = sorted((haversine(lat, lon, a, o), cid) for cid, a, o in points if haversine(lat, lon, a, o) <= 499.0)
    assert {cid for _, cid in brute} <= {h[0] for h in hits}
    assert [h[1] for h in hits] == sorted(h[1] for h in hits)  # nearest first
    for cid, d in hits:
        _, a, o = points[int(cid[1:])]
        assert abs(d - haversine(lat, lon, a, o)) < 1.0  # equirectangular error at city scale
    assert index.near_point(lon, lat, 500, 3) == hits[:3]


def test_polygon_with_hole_and_route_buffer() -> None:
    proj = Projection(37.5665, 126.978)
    ky, kx = proj.ky, proj.kx  # metres per degree
    grid = [
        (f"g{i}_{j}", 37.5665 + j * 100 / ky, 126.978 + i * 100 / kx) for i in range(-10, 11) for j in range(-10, 11)
    ]
    index = CameraIndex(grid)

    def box(half: float) -> list[list[float]]:
        lo, la = half / kx, half / ky
        return [[126.978 - lo, 37.5665 - la], [126.978 + lo, 37.5665 - la], [126.978 + lo, 37.5665 + la],
                [126.978 - lo, 37.5665 + la], [126.978 - lo, 37.5665 - la]]  # fmt: skip

    inside = {h[0] for h in index.in_polygon([box(450)])}
    assert len(inside) == 81  # -4..4 x -4..4
    with_hole = {h[0] for h in index.in_polygon([box(450), box(150)])}
    assert len(with_hole) == 81 - 9 and "g0_0" not in with_hole
    route = [[126.978 - 500 / kx, 37.5665], [126.978 + 500 / kx, 37.5665]]  # 1 km east-west
    near = index.near_line(route, 50)
    assert {h[0] for h in near} == {f"g{i}_0" for i in range(-5, 6)} and all(h[1] < 1 for h in near)


def test_scope_index_rebuilds_only_on_change() -> None:
    scope = ScopeIndex(seoul(100))
    assert not scope.update(seoul(100)) and scope.version == 0
    assert scope.update(seoul(101)) and scope.version == 1 and len(scope.index) == 101


# -- incidents ---------------------------------------------------------------------------------------------------

BASE = {"service": "112-video", "basis": "PIPA art. 25", "until": until(), "shared_with": ["fire-119"],
        "geometry": {"type": "Point", "coordinates": [126.978, 37.5665]}}  # fmt: skip


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"service": "pizza"}, "service"),
        ({"basis": ""}, "basis"),
        ({"until": "tomorrow"}, "until"),
        ({"until": "2020-01-01T00:00:00Z"}, "until"),
        ({"until": "2099-01-01T00:00:00"}, "until"),
        ({"geometry": {"type": "Point", "coordinates": [200, 37]}}, "geometry.coordinates"),
        ({"geometry": {"type": "Polygon", "coordinates": []}}, "geometry.type"),
        ({"radius_m": -1}, "radius_m"),
        ({"radius_m": "far"}, "radius_m"),
        ({"nearest": 0}, "nearest"),
        ({"shared_with": ["Fire 119"]}, "shared_with[0]"),
        ({"photo": {"content_type": "image/jpeg", "data": "aGk="}}, "photo"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_create_validation_names_the_field(patch: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_create({**BASE, **patch})
    assert err.value.field == field


def test_disaster_polygon_must_close() -> None:
    ring = [[126.97, 37.56], [126.98, 37.56], [126.98, 37.57], [126.97, 37.57]]
    body = {**BASE, "service": "disaster", "geometry": {"type": "Polygon", "coordinates": [ring]}}
    with pytest.raises(ValidationError) as err:
        parse_create(body)
    assert err.value.field == "geometry.coordinates[0]"
    ring.append(ring[0])
    assert parse_create(body).geometry["type"] == "Polygon"


def test_incident_store_scope_moves_and_persists(tmp_path: Path) -> None:
    points = [("a", 37.5665, 126.978), ("b", 37.5765, 126.978)]  # b is ~1.1 km north
    db = connect(tmp_path / "i.db")
    incidents = Incidents(db, ScopeIndex(points))
    body = {**BASE, "service": "vulnerable", "radius_m": 300,
            "photo": {"content_type": "image/jpeg", "data": "/9j/4AAQ"}}  # fmt: skip
    incident = incidents.create(parse_create(body), "welfare-seoul", "gt-1")
    assert incident.id.startswith("urn:emergency:uid:incidentid:") and incident.id.endswith(":goldentime.seoul")
    assert incidents.in_scope(incident, "a") and not incidents.in_scope(incident, "b")
    moved = incidents.update(incident, parse_patch({"geometry": {"type": "Point", "coordinates": [126.978, 37.5765]}},
                                                   incident))  # fmt: skip
    assert incidents.in_scope(moved, "b") and not incidents.in_scope(moved, "a")
    assert incidents.photo(incident.id) == ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10")
    with pytest.raises(ValidationError):
        parse_patch(
            {"geometry": {"type": "Point", "coordinates": [1, 2]}}, incidents.create(parse_create(BASE), "p", "c")
        )
    incidents.close(moved)
    again = Incidents(connect(tmp_path / "i.db"), ScopeIndex(points)).get(incident.id)
    assert again is not None and again.status == "closed" and not again.is_open()
    assert again.geometry["coordinates"] == [126.978, 37.5765] and again.shared_with == ("fire-119",)


# -- audit -------------------------------------------------------------------------------------------------------


def test_audit_chain_verifies_and_detects_tampering(db: sqlite3.Connection) -> None:
    log = AuditLog(db)
    for i in range(5):
        log.append("view.started", camera=f"cam{i}", agency="police-112", operator="kim", detail={"i": i})
    assert log.verify().ok and log.verify().records == 5
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET agency='x' WHERE seq=2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit WHERE seq=5")
    db.execute("DROP TRIGGER audit_no_update")  # an attacker with the file
    record = json.loads(db.execute("SELECT record FROM audit WHERE seq=3").fetchone()[0])
    record["operator"] = "nobody"
    db.execute("UPDATE audit SET record=? WHERE seq=3", (json.dumps(record),))
    result = log.verify()
    assert not result.ok and result.bad_seq == 3 and "hash" in result.problem


def test_audit_query_and_export(db: sqlite3.Connection) -> None:
    log = AuditLog(db)
    log.append("view.started", camera="c1", agency="police-112")
    log.append("view.ended", camera="c1", agency="police-112", duration_s=1.5)
    log.append("view.started", camera="c2", agency="fire-119")
    assert [r["event"] for r in log.query(camera="c1")] == ["view.started", "view.ended"]
    assert len(log.query(agency="fire-119")) == 1 and log.query(since=time.time() + 10) == []
    out = io.StringIO()
    assert export(log.all(), out, "csv") == 3
    assert out.getvalue().splitlines()[0].startswith("seq,ts,event")
    out = io.StringIO()
    export(log.all(), out, "json")
    assert [r["seq"] for r in json.loads(out.getvalue())] == [1, 2, 3]


# -- views -------------------------------------------------------------------------------------------------------


async def test_view_registry_ends_once_and_closes_sessions() -> None:
    closed: list[str] = []
    ended: list[tuple[str, str]] = []

    async def close(session_id: str) -> None:
        await asyncio.sleep(0.01)
        closed.append(session_id)

    views = ViewRegistry(close, lambda v, reason: ended.append((v.session_id, reason)))
    for i in range(100):
        views.add(View(f"s{i}", "cam", "jti", "inc" if i % 2 else "other", "op", "police-112", "gt-1", "b", 0, None))
    t0 = time.monotonic()
    assert await views.end_where(lambda v: v.incident == "inc", "incident closed") == 50
    assert time.monotonic() - t0 < 0.5  # concurrently, not 50 x 10 ms
    assert len(closed) == 50 and len(views) == 50
    assert await views.end("s1", "again") is None and len(ended) == 50
