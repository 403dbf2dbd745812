"""Token attacks beyond the matrix of test_incident_api.py, against a running front (WHEP, the camera list, the
snapshot): header tricks (kid injection, jku/x5u/jwk/x5c, crit, alg case), "psychic" ECDSA signatures,
duplicate JSON keys, oversized tokens, a token forged with a copied signing key (the security review's attack:
a 10-year token, and a never-issued one), a token used on another incident's camera, a single-use token
replayed; clients disabled, enabled and rotated while their views run. Each refusal is a 401/403 with an
audit record, and none costs more than verifying a good token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from helpers.access import FAST, agency, incident_around, until_true
from helpers.viewers import Viewer

from mediaserver.cli import main as cli
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from signaling.access import ACCESS, Access
from signaling.app import create_app
from signaling.tokens import P256_ORDER, TokenError

CAMERAS = [
    {"id": "cam1", "name": "City Hall", "district": "Jung-gu", "lat": 37.5665, "lon": 126.978},
    {"id": "cam2", "name": "Gwanghwamun", "district": "Jongno-gu", "lat": 37.5755, "lon": 126.978},  # 1 km N
]
TEN_YEARS = 10 * 365 * 86400
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
HttpClient = TestClient[Any, Any]


@pytest.fixture
def egress(city_egress: Egress) -> Egress:
    return city_egress


@dataclass
class World:
    """A running front; police-112 has incident A around cam1 (its real token `token`) and incident B around
    cam2."""

    http: HttpClient
    access: Access
    egress: Egress
    db: Path
    token: str
    claims: dict[str, Any]
    other_incident: str
    client_id: str
    secret: str

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        """The signing key, as a thief who copied it (with the master key) would hold it."""
        return self.access.keys.signing_key().private

    @property
    def kid(self) -> str:
        return self.access.keys.signing_key().kid

    @property
    def incident_url(self) -> str:
        return f"/api/incidents/{self.other_incident}"

    def denials(self) -> list[dict[str, Any]]:
        return self.access.audit.query(event="access.denied")

    def basic(self, secret: str | None = None) -> dict[str, str]:
        raw = base64.b64encode(f"{self.client_id}:{secret or self.secret}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}


@pytest.fixture
async def world(egress: Egress, tmp_path: Path) -> AsyncIterator[World]:
    db = tmp_path / "gt.db"
    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, db=db, access=FAST)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        access = app[ACCESS]
        client, secret = agency(access)
        access.refresh_cameras()
        a = incident_around(access, client, 126.978, 37.5665, 50)
        b = incident_around(access, client, 126.978, 37.5755, 50)
        token, claims, _ = access.issue_stream_token(a, client, "officer kim", None, "127.0.0.1")
        yield World(http, access, egress, db, token, claims, b.id, client.client_id, secret)


# -- building hostile tokens -------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def raw_signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def compact(header: str, payload: str, key: ec.EllipticCurvePrivateKey | None = None, sig: bytes | None = None) -> str:
    """A JWS from JSON texts as given (so they may repeat keys), signed with `key` or carrying `sig`."""
    signing_input = f"{b64(header.encode())}.{b64(payload.encode())}"
    signature = sig if sig is not None else raw_signature(key or OTHER_KEY, signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def sign(w: World, claims: dict[str, Any] | None = None, key: ec.EllipticCurvePrivateKey | None = None,
         **header: Any) -> str:  # fmt: skip
    head = {"alg": "ES256", "typ": "at+jwt", "kid": w.kid, **header}
    return compact(json.dumps(head), json.dumps(w.claims if claims is None else claims), key or w.key)


def forged(w: World, lifetime_s: int, **change: Any) -> dict[str, Any]:
    """Claims like the real token's, with a fresh jti (never issued) and the given lifetime."""
    now = int(time.time())
    return {**w.claims, "jti": secrets.token_urlsafe(16), "iat": now, "nbf": now, "exp": now + lifetime_s, **change}


def duplicated(w: World, key_name: str, first: Any) -> str:
    """The real token's claims with `key_name` appearing twice: `first`, then the real value."""
    body = json.dumps(w.claims)[:-1] + f", {json.dumps(key_name)}: {json.dumps(w.claims[key_name])}}}"
    body = body.replace(f'"{key_name}": {json.dumps(w.claims[key_name])}', f'"{key_name}": {json.dumps(first)}', 1)
    return compact(json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": w.kid}), body, w.key)


def with_signature(w: World, r: int, s: int) -> str:
    head = json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": w.kid})
    return compact(head, json.dumps(w.claims), sig=r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def alg(w: World, name: str) -> str:
    _, body, sig = w.token.split(".")
    new_head = b64(json.dumps({"alg": name, "typ": "at+jwt", "kid": w.kid}).encode())
    if name == "none":
        return f"{new_head}.{body}."
    return f"{new_head}.{body}.{sig}"


def hs256_with_public_key(w: World) -> str:
    pem = w.key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": w.kid}).encode())
    body = w.token.split(".")[1]
    return f"{head}.{body}.{b64(hmac.new(pem, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"


def der_signature(w: World) -> str:
    head, body, _ = w.token.split(".")
    return f"{head}.{body}.{b64(w.key.sign(f'{head}.{body}'.encode(), ec.ECDSA(hashes.SHA256())))}"


def jwk_of(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return dict(json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())))


Make = Callable[[World], str]
# name -> (token maker, status, words in the refusal)
# fmt: off
TOKEN_ATTACKS: dict[str, tuple[Make, int, str]] = {
    "kid path traversal": (lambda w: sign(w, kid="../../../../etc/passwd"), 401, "unknown signing key"),
    "kid SQL injection": (lambda w: sign(w, kid="x' OR '1'='1' --"), 401, "unknown signing key"),
    "kid of another type": (lambda w: sign(w, kid=["a"]), 401, "unknown signing key"),
    "jku to our own host": (lambda w: sign(w, key=OTHER_KEY, jku="http://127.0.0.1:9/jwks.json"), 401,
                            "header parameter not allowed: jku"),
    "x5u": (lambda w: sign(w, key=OTHER_KEY, x5u="http://127.0.0.1:9/cert.pem"), 401, "not allowed: x5u"),
    "embedded jwk": (lambda w: sign(w, key=OTHER_KEY, jwk=jwk_of(OTHER_KEY)), 401, "not allowed: jwk"),
    "x5c chain": (lambda w: sign(w, key=OTHER_KEY, x5c=["MIIB"]), 401, "not allowed: x5c"),
    "crit header": (lambda w: sign(w, crit=["exp"], exp=1), 401, "header parameter not allowed: crit"),
    "psychic signature r=s=0": (lambda w: with_signature(w, 0, 0), 401, "out of range"),
    "signature r=s=n": (lambda w: with_signature(w, P256_ORDER, P256_ORDER), 401, "out of range"),
    "DER signature": (der_signature, 401, "not an ES256 signature"),
    "duplicate alg in header": (
        lambda w: compact(f'{{"alg": "ES256", "typ": "at+jwt", "kid": "{w.kid}", "alg": "none"}}',
                          json.dumps(w.claims), w.key), 401, "duplicate key"),
    "duplicate exp in payload": (lambda w: duplicated(w, "exp", int(time.time()) + TEN_YEARS), 401, "duplicate key"),
    "duplicate aud in payload": (lambda w: duplicated(w, "aud", "goldentime:api"), 401, "duplicate key"),
    "oversized token": (lambda w: sign(w, forged(w, 600, pad="x" * 3300)), 401, "token too large"),
    "alg es256 (case)": (lambda w: alg(w, "es256"), 401, "algorithm not allowed"),
    "alg none": (lambda w: alg(w, "none"), 401, "algorithm not allowed"),
    "alg HS256, public key as secret": (hs256_with_public_key, 401, "algorithm not allowed"),
    "copied key: a 10-year token": (lambda w: sign(w, forged(w, TEN_YEARS)), 401, "over the issuing limit"),
    "copied key: never issued": (lambda w: sign(w, forged(w, 600)), 401, "not issued by this server"),
    "copied key: issued jti stretched": (lambda w: sign(w, {**w.claims, "exp": w.claims["exp"] + 1800}), 401,
                                         "does not match its issue record"),
    "copied key: issued jti, other subject": (lambda w: sign(w, {**w.claims, "sub": "mallory"}), 401,
                                              "does not match its issue record"),
}


def moved_to(w: World) -> str:
    """The real jti, its incident context swapped for incident B's (signed with the copied key)."""
    return sign(w, {**w.claims, "incident": {**w.claims["incident"], "id": w.other_incident}})


# Camera attacks: only at the doors that name a camera.
CAMERA_ATTACKS: dict[str, tuple[Make, str, int, str]] = {
    "incident A's token on incident B's camera": (lambda w: w.token, "cam2", 403, "not in the incident's scope"),
    "copied key: issued jti moved to incident B": (moved_to, "cam2", 401, "does not match its issue record"),
}


async def knock(w: World, door: str, token: str, camera: str = "cam1") -> tuple[int, dict[str, Any], str]:
    auth = {"Authorization": f"Bearer {token}"}
    if door == "whep":
        res = await w.http.post(f"/whep/{camera}", data="v=0\r\n", headers={**auth, "Content-Type": "application/sdp"})
    elif door == "snapshot":
        res = await w.http.get(f"/api/cameras/{camera}/snapshot", headers=auth)
    else:
        res = await w.http.get("/api/cameras", headers=auth)
    body = await res.json() if res.content_type == "application/json" else {}
    return res.status, body, res.headers.get("WWW-Authenticate", "")


async def refused(w: World, door: str, token: str, status: int, words: str, camera: str = "cam1") -> None:
    sessions = len(w.egress.sessions)
    before = len(w.denials())
    got, body, www = await knock(w, door, token, camera)
    text = f"{body.get('error')}: {body.get('detail', '')}"
    assert got == status and words in text, (door, got, body)
    if status == 401:
        assert www.startswith("Bearer")
    denials = w.denials()
    assert len(denials) == before + 1 and words in denials[-1]["reason"] and denials[-1]["remote"] == "127.0.0.1"
    assert len(w.egress.sessions) == sessions  # nothing opened


@pytest.mark.parametrize("door", ["whep", "snapshot", "cameras"])
@pytest.mark.parametrize("name", list(TOKEN_ATTACKS))
async def test_token_attack_is_refused_and_audited(world: World, name: str, door: str) -> None:
    make, status, words = TOKEN_ATTACKS[name]
    assert (await knock(world, door, world.token))[0] not in (401, 403)  # the real token passes this door
    await refused(world, door, make(world), status, words)


@pytest.mark.parametrize("door", ["whep", "snapshot"])
@pytest.mark.parametrize("name", list(CAMERA_ATTACKS))
async def test_camera_attack_is_refused_and_audited(world: World, name: str, door: str) -> None:
    make, camera, status, words = CAMERA_ATTACKS[name]
    await refused(world, door, make(world), status, words, camera)


async def test_no_attack_costs_more_than_a_good_verify(world: World) -> None:
    """Every refusal is at most about one verify of a good token: nothing fetched, nothing parsed twice."""
    tokens = world.access.tokens
    audience = world.access.settings.tokens.stream_audience

    def once(token: str, n: int = 50) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                tokens.verify(token, audience)
            except TokenError:
                pass
        return (time.perf_counter() - t0) / n

    made = {"good": world.token, **{name: make(world) for name, (make, _, _) in TOKEN_ATTACKS.items()}}
    best = dict.fromkeys(made, float("inf"))
    for _ in range(6):  # interleaved rounds, the best of each: the machine's other load cancels out
        for name, token in made.items():
            best[name] = min(best[name], once(token))
    good = best.pop("good")
    costs = best
    costly = {name: round(c / good, 2) for name, c in costs.items() if c > 1.5 * good + 20e-6}
    assert not costly, (f"good verify {good * 1e6:.0f} us", costly)
    assert statistics.median(costs.values()) <= good * 1.2


# -- single use ----------------------------------------------------------------------------------------------


async def test_a_single_use_token_opens_one_view_and_is_refused_after(world: World) -> None:
    w = world
    [incident] = [i for i in w.access.incidents.open_incidents() if i.id != w.other_incident]
    res = await w.http.post(f"/api/incidents/{incident.id}/tokens", json={"operator": "kim", "single_use": True},
                            headers=w.basic())  # fmt: skip
    assert res.status == 201, await res.text()
    token = (await res.json())["token"]
    viewer, location = await open_view(w, token)
    try:
        await refused(w, "snapshot", token, 403, "single-use token already used")  # a second picture
        assert len(w.egress.sessions) == 1
        res = await w.http.delete(location, headers={"Authorization": f"Bearer {token}"})  # its own view: fine
        assert res.status == 200
        await until_true(lambda: not w.egress.sessions, 2.0)
        await refused(w, "whep", token, 403, "single-use token already used")  # replayed after the view ended
    finally:
        await viewer.pc.close()
    res = await w.http.post(f"/api/incidents/{incident.id}/tokens", json={"operator": "kim", "single_use": "yes"},
                            headers=w.basic())  # fmt: skip
    assert res.status == 400 and (await res.json())["field"] == "single_use"


# -- clients disabled, enabled, rotated --------------------------------------------------------------------------


async def run_cli(*args: str) -> int:
    """The admin's command, in a thread: its own connection to the database, as from another process."""
    return await asyncio.wait_for(asyncio.to_thread(cli, list(args)), 30)


async def open_view(w: World, token: str) -> tuple[Viewer, str]:
    viewer = Viewer()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    res = await w.http.post("/whep/cam1", data=await viewer.offer(), headers=headers)
    assert res.status == 201, await res.text()
    await viewer.answer(await res.text())
    return viewer, res.headers["Location"]


async def test_disabling_a_client_ends_its_views_within_a_second_and_enable_restores_it(world: World) -> None:
    w = world
    w.access.start()  # the sweep, as the server runs it
    viewer, _ = await open_view(w, w.token)
    try:
        assert (await w.http.get(w.incident_url, headers=w.basic())).status == 200
        assert await run_cli("clients", "disable", w.client_id, "--db", str(w.db)) == 0
        waited = await until_true(lambda: not w.egress.sessions, 2.0)
        assert waited < 1.0, waited
        await until_true(lambda: bool(w.access.audit.query(event="view.ended")), 1.0)  # audited after the close
        [ended] = w.access.audit.query(event="view.ended")
        assert ended["reason"] == "client disabled" and ended["client_id"] == w.client_id
        await refused(w, "whep", w.token, 401, "client disabled")
        assert (await w.http.get(w.incident_url, headers=w.basic())).status == 401  # its secret too
        assert [r["client_id"] for r in w.access.audit.query(event="client.disabled")] == [w.client_id]

        assert await run_cli("clients", "enable", w.client_id, "--db", str(w.db)) == 0
        await asyncio.sleep(0.6)  # the verifier rereads the flags every 0.5 s
        assert (await knock(w, "cameras", w.token))[0] == 200
        assert (await w.http.get(w.incident_url, headers=w.basic())).status == 200
    finally:
        await viewer.pc.close()
    assert await run_cli("clients", "disable", "gt-nobody", "--db", str(w.db)) == 2


async def test_rotating_a_secret_stops_the_old_one_at_once_and_can_revoke_tokens(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    w.access.start()
    assert (await w.http.get(w.incident_url, headers=w.basic())).status == 200  # remembered by the server now
    viewer, _ = await open_view(w, w.token)
    try:
        capsys.readouterr()
        assert await run_cli("clients", "rotate", w.client_id, "--json", "--db", str(w.db)) == 0
        rotated = json.loads(capsys.readouterr().out)
        assert rotated["client_id"] == w.client_id and rotated["tokens_revoked"] == 0
        assert (await w.http.get(w.incident_url, headers=w.basic())).status == 401  # the old secret, at once
        assert (await w.http.get(w.incident_url, headers=w.basic(rotated["client_secret"]))).status == 200
        assert len(w.egress.sessions) == 1  # plain rotation keeps the operators' views

        assert await run_cli("clients", "rotate", w.client_id, "--revoke-tokens", "--json", "--db", str(w.db)) == 0
        assert json.loads(capsys.readouterr().out)["tokens_revoked"] == 1
        waited = await until_true(lambda: not w.egress.sessions, 2.0)
        assert waited < 1.0, waited
        await refused(w, "whep", w.token, 401, "token revoked")
    finally:
        await viewer.pc.close()
