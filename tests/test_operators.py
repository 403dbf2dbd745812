"""Operators sign in to the console (issue 12 item 1) and failed logins back off (issue 13 item 3): accounts,
the session cookie's flags, CSRF, idle timeout, lockout without scrypt, the audit naming the signed-in operator,
the same backoff for agency clients' credentials, and the `mediaserver operators` CLI."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, agency, basic, until

from mediaserver.cli.commands import main
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS, Access, AccessSettings
from signaling.app import create_app
from signaling.edge import EdgeSettings
from signaling.lockout import Lockout, LockoutSettings
from signaling.operators import OperatorSettings
from signaling.session_api import COOKIE

NO_HUBS: dict[str, Hub] = {}
Client = TestClient[Any, Any]
PASSWORD = "correct horse battery"
FAST_OPS = OperatorSettings(scrypt_n=2**4)
INCIDENT = {"service": "112-video", "basis": "PIPA art. 25(1)4 (emergency)",
            "geometry": {"type": "Point", "coordinates": [126.978, 37.5665]}, "radius_m": 300}  # fmt: skip


async def serve(tmp_path: Path, settings: AccessSettings | None = None, edge: EdgeSettings | None = None) -> Client:
    local = LocalWorkerClient(Egress(NO_HUBS.get))
    settings = settings or AccessSettings(scrypt_n=FAST.scrypt_n, operators=FAST_OPS)
    app = create_app(local, list, db=tmp_path / "gt.db", access=settings, edge=edge, web_dir=None)
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[Client]:
    client = await serve(tmp_path)
    yield client
    await client.close()


def access_of(http: Client) -> Access:
    return http.app[ACCESS]


def kim(http: Client, role: str = "operator", username: str = "kim", agency_: str = "police-112") -> None:
    access_of(http).add_operator(agency_, username, role, PASSWORD)


async def sign_in(http: Client, username: str = "kim", password: str = PASSWORD, **headers: str) -> Any:
    return await http.post("/api/session", json={"username": username, "password": password}, headers=headers)


async def signed_in(http: Client, username: str = "kim") -> dict[str, str]:
    """Sign in; returns the headers a same-origin console script sends on a change (the jar keeps the cookie)."""
    res = await sign_in(http, username)
    assert res.status == 201, await res.text()
    doc = await res.json()
    return {"X-CSRF-Token": doc["csrf_token"], "Origin": f"http://{http.host}:{http.port}"}


def events(http: Client, name: str) -> list[dict[str, Any]]:
    return [r for r in access_of(http).audit.all() if r["event"] == name]


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every scrypt the process runs (the real function still runs)."""
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return calls


# -- sign-in, cookie, whoami, sign-out --------------------------------------------------------------------------


async def test_sign_in_sets_a_strict_http_only_cookie_and_whoami_names_the_operator(http: Client) -> None:
    kim(http, "supervisor")
    res = await sign_in(http)
    assert res.status == 201
    cookie = res.headers["Set-Cookie"]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path"} <= flags and "samesite=strict" in cookie.lower().replace(" ", "")
    assert "secure" not in flags  # plain HTTP on loopback: a Secure cookie would never come back
    value = res.cookies[COOKIE].value
    assert len(value) >= 43  # 256 bits, url-safe base64
    stored = [r[0] for r in access_of(http).db.execute("SELECT id_hash FROM operator_sessions")]
    assert stored == [hashlib.sha256(value.encode()).hexdigest()]  # the table never holds the cookie
    who = await (await http.get("/api/session")).json()
    assert (who["operator"], who["agency"], who["role"]) == ("kim", "police-112", "supervisor")
    assert who["csrf_token"] == (await res.json())["csrf_token"]
    [record] = events(http, "operator.signed_in")
    assert record["operator"] == "kim" and record["agency"] == "police-112"


async def test_cookie_is_secure_over_https_from_a_trusted_proxy_and_with_the_option(tmp_path: Path) -> None:
    edge = EdgeSettings(trusted_proxies=["127.0.0.1/32"])
    http = await serve(tmp_path, edge=edge)
    try:
        kim(http)
        res = await sign_in(http, **{"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https"})
        assert res.status == 201 and "Secure" in res.headers["Set-Cookie"]
        assert res.headers["Set-Cookie"].startswith("__Host-gt_session=")  # Secure, Path=/, no Domain
        assert "domain" not in res.headers["Set-Cookie"].lower()
        res = await sign_in(http, **{"X-Forwarded-Proto": "https"})  # no X-Forwarded-For: nothing believed
        assert "Secure" not in res.headers["Set-Cookie"]
    finally:
        await http.close()
    settings = AccessSettings(scrypt_n=FAST.scrypt_n, operators=OperatorSettings(scrypt_n=2**4, secure_cookies=True))
    (tmp_path / "b").mkdir()
    http = await serve(tmp_path / "b", settings)
    try:
        kim(http, username="lee")
        res = await sign_in(http, "lee")
        assert res.status == 201 and "Secure" in res.headers["Set-Cookie"]
    finally:
        await http.close()


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(http: Client) -> None:
    kim(http)
    headers = await signed_in(http)
    assert (await http.delete("/api/session")).status == 403  # no token
    res = await http.delete("/api/session", headers=headers)
    assert res.status == 200
    assert (await http.get("/api/session")).status == 401
    assert access_of(http).db.execute("SELECT COUNT(*) FROM operator_sessions").fetchone()[0] == 0
    assert events(http, "operator.signed_out")[0]["operator"] == "kim"


async def test_idle_timeout_ends_the_session(tmp_path: Path) -> None:
    ops = OperatorSettings(scrypt_n=2**4, idle_s=60, touch_s=1)
    http = await serve(tmp_path, AccessSettings(scrypt_n=FAST.scrypt_n, operators=ops))
    try:
        kim(http)
        res = await sign_in(http)
        cookie = res.cookies[COOKIE].value
        operators = access_of(http).operators
        made = operators.session(cookie)
        assert made is not None
        assert operators.session(cookie, now=made.created_at + 59) is not None  # used: idle clock restarts
        assert operators.session(cookie, now=made.created_at + 59 + 59) is not None
        assert operators.session(cookie, now=made.created_at + 59 + 59 + 61) is None  # idle too long
        assert (await http.get("/api/session")).status == 401  # gone for every process: the row is deleted
    finally:
        await http.close()


async def test_absolute_lifetime_ends_an_active_session(http: Client) -> None:
    kim(http)
    cookie = (await sign_in(http)).cookies[COOKIE].value
    operators = access_of(http).operators
    made = operators.session(cookie)
    assert made is not None
    t = made.created_at
    while t + 600 < made.created_at + operators.settings.lifetime_s:  # busy all day
        t += 600
        assert operators.session(cookie, now=t) is not None
    assert operators.session(cookie, now=made.created_at + operators.settings.lifetime_s) is None


# -- lockout ---------------------------------------------------------------------------------------------------


async def test_five_wrong_passwords_lock_out_without_running_scrypt(http: Client, scrypt_calls: list[int]) -> None:
    kim(http)
    scrypt_calls.clear()
    statuses = [(await sign_in(http, password="wrong password!")).status for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    assert len(scrypt_calls) == 5  # one scrypt per failed attempt, no more
    res = await sign_in(http)  # the right password while locked: refused, and no hash runs
    assert res.status == 429 and 59 <= int(res.headers["Retry-After"]) <= 60
    for _ in range(20):
        assert (await sign_in(http, password="another guess")).status == 429
    assert len(scrypt_calls) == 5
    lockouts = [r for r in events(http, "access.denied") if r["detail"]["status"] == 429]
    assert len(lockouts) == 1 and lockouts[0]["operator"] == "kim"  # one record per lockout
    assert "locked for 60 s" in lockouts[0]["reason"]
    access_of(http).flush_refusals()
    [summary] = events(http, "access.suppressed")  # the 21 refusals while locked, counted in one record
    assert summary["detail"]["count"] == 21 and summary["detail"]["statuses"] == {"429": 21}


async def test_unknown_usernames_cost_one_scrypt_and_the_address_locks_too(
    http: Client, scrypt_calls: list[int]
) -> None:
    kim(http)
    scrypt_calls.clear()
    for n in range(19):  # different names: no account reaches 5, the address does at 20
        assert (await sign_in(http, f"guess{n}", "wrong password!")).status == 401
    assert len(scrypt_calls) == 19
    assert (await sign_in(http, "guess19", "wrong password!")).status == 429
    assert (await sign_in(http)).status == 429  # even kim's right password from this address
    assert len(scrypt_calls) == 20


def test_lockouts_double_and_are_forgotten() -> None:
    lock = Lockout(LockoutSettings(failures=2, address_failures=100, lock_s=10, max_lock_s=30, forget_s=100))
    assert lock.failed("a", "x", now=0) is None
    assert lock.failed("a", "x", now=1) == 10
    assert lock.retry_after("a", "x", now=5) == 6 and lock.retry_after("b", "x", now=5) is None
    lock.failed("a", "x", now=12)
    assert lock.failed("a", "x", now=13) == 20  # the second lockout doubles
    lock.failed("a", "x", now=40)
    assert lock.failed("a", "x", now=41) == 30  # capped
    lock.failed("a", "x", now=300)  # long quiet: starts over
    assert lock.failed("a", "x", now=301) == 10
    lock.succeeded("a")
    assert lock.retry_after("a", now=302) is None


async def test_client_credentials_back_off_per_client(http: Client, scrypt_calls: list[int]) -> None:
    access = access_of(http)
    police, secret = agency(access)
    assert (await http.get("/api/incidents/x", headers=basic(police.client_id, secret))).status == 404
    wrong = basic(police.client_id, "not the secret")
    statuses = [(await http.post("/api/incidents", json={}, headers=wrong)).status for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    calls = len(scrypt_calls)
    form = {"grant_type": "client_credentials", "client_id": police.client_id, "client_secret": "nope"}
    res = await http.post("/oauth/token", data=form)
    assert res.status == 429 and "Retry-After" in res.headers
    assert len(scrypt_calls) == calls  # no hash while locked, on either login path
    # The app calling with its right secret, remembered from a minute ago, is not cut off by the attack.
    assert (await http.get("/api/incidents/x", headers=basic(police.client_id, secret))).status == 404
    fire, fire_secret = agency(access, "fire-119")
    res = await http.get("/api/incidents/x", headers=basic(fire.client_id, fire_secret))
    assert res.status == 404  # another client from the same address: 5 failures do not lock the address


# -- CSRF ------------------------------------------------------------------------------------------------------


async def test_csrf_token_and_same_origin_are_required_for_changes(http: Client) -> None:
    kim(http)
    headers = await signed_in(http)
    body = {**INCIDENT, "until": until()}
    res = await http.post("/api/incidents", json=body)
    assert res.status == 403 and (await res.json())["error"] == "CSRF check failed"
    res = await http.post("/api/incidents", json=body, headers={**headers, "X-CSRF-Token": "0" * 64})
    assert res.status == 403
    res = await http.post("/api/incidents", json=body, headers={**headers, "Origin": "https://attacker.example"})
    assert res.status == 403
    res = await http.post("/api/incidents", json=body, headers={**headers, "Sec-Fetch-Site": "cross-site"})
    assert res.status == 403
    refused = [r for r in events(http, "access.denied") if r["reason"].startswith("CSRF")]
    assert len(refused) == 4 and {r["operator"] for r in refused} == {"kim"}
    assert (await http.get("/api/session")).status == 200  # reads need no token
    res = await http.post("/api/incidents", json=body, headers={**headers, "Sec-Fetch-Site": "same-origin"})
    assert res.status == 201, await res.text()


async def test_cross_site_sign_in_is_refused(http: Client) -> None:
    kim(http)
    res = await sign_in(http, Origin="https://attacker.example")
    assert res.status == 403


async def test_agency_apps_with_credentials_need_no_csrf_token(http: Client) -> None:
    kim(http)
    await signed_in(http)  # a stray cookie in the jar does not matter: Basic wins
    police, secret = agency(access_of(http))
    res = await http.post(
        "/api/incidents", json={**INCIDENT, "until": until()}, headers=basic(police.client_id, secret)
    )
    assert res.status == 201


# -- acting as the agency, audited by name ------------------------------------------------------------------------


async def test_a_signed_in_operator_acts_for_the_agency_and_every_record_names_them(http: Client) -> None:
    kim(http)
    headers = await signed_in(http)
    changing = {**headers, "X-Operator": "someone else"}
    res = await http.post("/api/incidents", json={**INCIDENT, "until": until()}, headers=changing)
    assert res.status == 201, await res.text()
    incident = (await res.json())["id"]
    res = await http.post(f"/api/incidents/{incident}/tokens", json={"operator": "mallory"}, headers=changing)
    assert res.status == 201, await res.text()
    token = await res.json()
    claims = access_of(http).tokens.verify(token["token"], access_of(http).settings.tokens.stream_audience)
    assert claims["sub"] == "kim"  # the signed-in operator, not what the body or X-Operator says
    assert (await http.get(f"/api/incidents/{incident}")).status == 200
    assert (await http.post(f"/api/incidents/{incident}/close", headers=changing)).status == 200
    made = [r for r in access_of(http).audit.all() if r["event"] in ("incident.created", "token.issued",
                                                                       "incident.closed")]  # fmt: skip
    assert [r["event"] for r in made] == ["incident.created", "token.issued", "incident.closed"]
    assert {r["operator"] for r in made} == {"kim"} and {r["agency"] for r in made} == {"police-112"}
    fire = {**INCIDENT, "until": until()}
    fire_client, fire_secret = agency(access_of(http), "fire-119")
    res = await http.post("/api/incidents", json=fire, headers=basic(fire_client.client_id, fire_secret))
    other = (await res.json())["id"]
    assert (await http.get(f"/api/incidents/{other}")).status == 403  # not kim's agency's
    denied = [r for r in events(http, "access.denied") if r.get("incident") == other]
    assert denied and denied[-1]["operator"] == "kim"


async def test_auditors_read_the_audit_and_disabled_operators_lose_session_and_tokens(http: Client) -> None:
    kim(http, "auditor", "park")
    park = await signed_in(http, "park")
    res = await http.get("/api/audit")
    assert res.status == 200 and (await res.json())["count"] >= 1
    res = await http.post("/api/incidents", json={**INCIDENT, "until": until()}, headers=park)
    assert res.status == 403 and "auditors cannot" in (await res.json())["error"]  # auditors act on nothing
    kim(http)
    headers = await signed_in(http)
    res = await http.post("/api/incidents", json={**INCIDENT, "until": until()}, headers=headers)
    incident = (await res.json())["id"]
    token = (await (await http.post(f"/api/incidents/{incident}/tokens", json={}, headers=headers)).json())["token"]
    access = access_of(http)
    assert await access.set_operator_disabled("kim", True, operator="test")
    assert (await http.get("/api/session")).status == 401
    res = await http.get("/api/cameras", headers={"Authorization": f"Bearer {token}"})
    assert res.status == 401  # a disabled operator's tokens are refused like a disabled client's


async def test_supervisors_add_their_agencys_operators_over_the_api(http: Client) -> None:
    kim(http, "supervisor", "choi")
    headers = await signed_in(http, "choi")
    res = await http.post("/api/operators", json={"agency": "police-112", "username": "yoon", "role": "operator"},
                          headers=headers)  # fmt: skip
    assert res.status == 201, await res.text()
    password = (await res.json())["password"]
    for body in ({"agency": "fire-119", "username": "x1", "role": "operator"},
                 {"agency": "police-112", "username": "x2", "role": "city-admin"}):  # fmt: skip
        assert (await http.post("/api/operators", json=body, headers=headers)).status == 403
    listed = await (await http.get("/api/operators")).json()
    assert {o["username"] for o in listed["operators"]} == {"choi", "yoon"}
    assert events(http, "operator.added")[-1]["operator"] == "choi"
    await http.delete("/api/session", headers=headers)
    res = await sign_in(http, "yoon", password)
    assert res.status == 201
    yoon = {"X-CSRF-Token": (await res.json())["csrf_token"]}
    res = await http.post("/api/operators", json={"agency": "police-112", "username": "x3", "role": "operator"},
                          headers=yoon)  # fmt: skip
    assert res.status == 403  # operators manage nobody


# -- CLI -------------------------------------------------------------------------------------------------------


def test_operators_cli_prints_a_one_time_password_or_reads_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "gt.db")
    run: Callable[..., int] = lambda *a: main(["operators", *a, "--db", db])  # noqa: E731
    assert run("add", "--agency", "police-112", "--username", "kim", "--role", "operator", "--json") == 0
    made = json.loads(capsys.readouterr().out)
    assert made["username"] == "kim" and len(made["password"]) >= 16
    monkeypatch.setattr("sys.stdin", io.StringIO("a password from a vault\n"))
    assert run("add", "--agency", "city-video", "--username", "han", "--role", "city-admin", "--password-stdin") == 0
    assert "password" not in capsys.readouterr().out
    assert run("add", "--agency", "police-112", "--username", "kim") == 2  # taken
    assert "already taken" in capsys.readouterr().err
    assert run("list") == 0
    assert capsys.readouterr().out.count("\n") == 2
    row = sqlite3.connect(db).execute("SELECT password_hash FROM operators WHERE username='han'").fetchone()
    assert row[0].startswith("scrypt$") and "vault" not in row[0]
    assert run("disable", "kim") == 0 and run("disable", "nobody") == 2
    from signaling.access import offline

    access = offline(db)
    try:
        assert [o.username for o in access.operators.list()] == ["han"]
        added = [r for r in access.audit.all() if r["event"] == "operator.added"]
        assert [r["detail"]["username"] for r in added] == ["kim", "han"] and added[0]["operator"] == "cli"
    finally:
        access.close()
