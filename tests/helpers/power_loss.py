"""Power loss, as near as a test gets: `mediaserver serve --workers 2` killed with SIGKILL (its whole process
group: the front and its worker processes) in the middle of a burst of incident, token and audit writes, then
restarted and checked. Shared by tests/test_power_loss.py (a few rounds) and benchmarks/power_loss.py (many).

The burst is an agency app's traffic over HTTP, as fast as the quotas allow: several clients, each logging in
(an API token) and then, in a loop, creating an incident, minting a stream token, opening a WHEP view on the
camera and ending it, revoking every other token, closing every other incident, plus a few refused requests
(no or a bad bearer token). Every answer the client saw as a success (200/201) is noted in `Acked`; after the
restart `check()` finds each of them in the database (incidents by id, tokens by jti, the audit record of each
action), runs `mediaserver audit verify`, SQLite's integrity check and compares the registry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from helpers.access import FAST
from helpers.peers import _die_with_parent, free_port
from mediaserver.registry import Registry, make_camera
from signaling.access import Access

LAT, LON = 37.5663, 126.9779
CAMERA = "pl-cam-0"
INCIDENTS_PER_CLIENT = 20  # QuotaSettings.incident_burst: a fresh server's bucket (buckets live in memory)
MINTS_PER_CLIENT = 59  # QuotaSettings.mint_burst, less the login's API token
REFUSALS = 10  # per round, under RefusalLimits.burst (20 per source): each one must be on record
WRITES_PER_LOOP = 5  # about: incident, token, view started, view ended, and a revoke or a close


@dataclass
class Acked:
    """What the client saw acknowledged (and how many requests it sent)."""

    incidents: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)  # jti, stream and API tokens
    revoked: set[str] = field(default_factory=set)
    views_started: set[str] = field(default_factory=set)  # session ids
    views_ended: set[str] = field(default_factory=set)
    refusals: set[str] = field(default_factory=set)  # the marker camera id each refused request named
    sent: int = 0
    failed: int = 0  # answers other than the expected success or refusal (e.g. a view before the camera streams)
    cut: int = 0  # requests the kill cut off (sent, never answered)

    def writes(self) -> int:
        return sum(len(s) for s in (self.incidents, self.closed, self.tokens, self.revoked, self.views_started,
                                    self.views_ended, self.refusals))  # fmt: skip

    def merge(self, other: Acked) -> None:
        for name in ("incidents", "closed", "tokens", "revoked", "views_started", "views_ended", "refusals"):
            getattr(self, name).update(getattr(other, name))


# -- setup ------------------------------------------------------------------------------------------------------


def prepare(db: str, camera_url: str, clients: int) -> list[str]:
    """A registry with one camera and `clients` agency clients (cheap scrypt); their Basic headers."""
    registry = Registry(db)
    registry.upsert([make_camera(CAMERA, "power loss camera", "Jung-gu", LAT, LON, camera_url)])
    points = [c.public() for c in registry.list()]
    registry.close()

    async def no_sessions(session_id: str) -> None:
        pass

    access = Access(db, no_sessions, lambda: points, FAST)
    headers = []
    for n in range(clients):
        client, secret = access.add_client(f"agency-{n}", f"power loss app {n}", "agency")
        headers.append("Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode())
    access.close()
    return headers


def registry_rows(db: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(conn.execute("SELECT * FROM cameras ORDER BY id"))


# -- the server -------------------------------------------------------------------------------------------------


def start(db: str, log_path: Path, workers: int = 2) -> tuple[str, subprocess.Popen[bytes]]:
    """`mediaserver serve` in a process group of its own (its workers join it), so one killpg takes all."""
    port = free_port()
    argv = [sys.executable, "-m", "mediaserver.cli", "serve", "--db", db, "--http", f"127.0.0.1:{port}",
            "--workers", str(workers), "--ice-host", "127.0.0.1"]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)  # fmt: skip
    return f"http://127.0.0.1:{port}", proc


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGKILL to every process of the server's group; returns once none is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the server's workers outlived SIGKILL")
        time.sleep(0.02)


async def wait_streaming(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> float:
    """Until /readyz says ready and /metrics shows the camera streaming; the seconds it took."""
    t0 = time.monotonic()
    async with aiohttp.ClientSession(base) as http:
        while True:
            assert proc.poll() is None, "server exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get("/readyz") as ready:
                    if ready.status == 200:
                        async with http.get("/metrics") as res:
                            if 'goldentime_cameras{state="streaming"} 1' in await res.text():
                                return time.monotonic() - t0
            assert time.monotonic() - t0 < timeout, f"camera not streaming within {timeout:g} s"
            await asyncio.sleep(0.1)


# -- the burst --------------------------------------------------------------------------------------------------


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


class Burst:
    """One round's traffic against one server; `run()` returns once the server is gone or every budget is spent."""

    def __init__(self, base: str, basics: list[str], offer: str, tag: str) -> None:
        self.base, self.basics, self.offer, self.tag = base, basics, offer, tag
        self.acked = Acked()
        self.in_flight = 0

    async def run(self) -> Acked:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(self.base, timeout=timeout, connector=connector) as http:
            await asyncio.gather(*(self._client(http, n, basic) for n, basic in enumerate(self.basics)),
                                 self._refusals(http))  # fmt: skip
        return self.acked

    async def _call(self, http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """(status, JSON body or text or the Location header); (0, None) when the server went away."""
        self.acked.sent += 1
        self.in_flight += 1
        try:
            async with http.request(method, path, **kw) as res:
                if res.content_type == "application/json":
                    return res.status, await res.json()
                return res.status, res.headers.get("Location") if res.status == 201 else await res.text()
        except (aiohttp.ClientError, TimeoutError):
            self.acked.cut += 1
            return 0, None
        finally:
            self.in_flight -= 1

    async def _client(self, http: aiohttp.ClientSession, n: int, basic: str) -> None:
        status, doc = await self._call(http, "POST", "/oauth/token", data={"grant_type": "client_credentials"},
                                       headers={"Authorization": basic})  # fmt: skip
        if status != 200:
            self.acked.failed += status != 0
            return
        self.acked.tokens.add(jti_of(doc["access_token"]))
        api = {"Authorization": f"Bearer {doc['access_token']}"}
        for i in range(min(INCIDENTS_PER_CLIENT, MINTS_PER_CLIENT)):
            if not await self._loop(http, api, n, i):
                return

    async def _loop(self, http: aiohttp.ClientSession, api: dict[str, str], n: int, i: int) -> bool:
        """One incident's life; False once the server is gone (or refuses: the budget is spent)."""
        until = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
        body = {"service": "112-video", "basis": "power loss test", "until": until, "radius_m": 50,
                "geometry": {"type": "Point", "coordinates": [LON, LAT]}}  # fmt: skip
        status, doc = await self._call(http, "POST", "/api/incidents", json=body, headers=api)
        if status != 201:
            self.acked.failed += status != 0
            return False
        incident = str(doc["id"])
        self.acked.incidents.add(incident)
        grant = {"operator": f"officer {n}-{i}", "ttl_s": 600}
        status, doc = await self._call(http, "POST", f"/api/incidents/{incident}/tokens", json=grant, headers=api)
        if status != 201:
            self.acked.failed += status != 0
            return False
        jti, bearer = str(doc["jti"]), {"Authorization": f"Bearer {doc['token']}"}
        self.acked.tokens.add(jti)
        if not await self._view(http, bearer):
            return False
        if i % 2 == 0:
            status, _ = await self._call(http, "DELETE", f"/api/tokens/{jti}", headers=api)
            if status == 200:
                self.acked.revoked.add(jti)
        else:
            status, _ = await self._call(http, "POST", f"/api/incidents/{incident}/close", headers=api)
            if status == 200:
                self.acked.closed.add(incident)
        return status != 0

    async def _view(self, http: aiohttp.ClientSession, bearer: dict[str, str]) -> bool:
        headers = {**bearer, "Content-Type": "application/sdp"}
        status, location = await self._call(http, "POST", f"/whep/{CAMERA}", data=self.offer, headers=headers)
        if status != 201:
            self.acked.failed += status != 0
            return status != 0  # a view refused for load is no reason to stop writing
        session = str(location).rsplit("/", 1)[-1]
        self.acked.views_started.add(session)
        status, _ = await self._call(http, "DELETE", str(location), headers=bearer)
        if status == 200:
            self.acked.views_ended.add(session)
        return status != 0

    async def _refusals(self, http: aiohttp.ClientSession) -> None:
        """A few refused WHEP offers (no token, a forged one), each naming a camera id of its own."""
        for n in range(REFUSALS):
            await asyncio.sleep(0.05)
            marker = f"pl-{self.tag}-refused-{n}"
            headers = {"Content-Type": "application/sdp"}
            if n % 2:
                headers["Authorization"] = "Bearer eyJhbGciOiJFUzI1NiJ9.e30.forged"
            status, _ = await self._call(http, "POST", f"/whep/{marker}", data="v=0\r\n", headers=headers)
            if status == 0:
                return
            if status == 401:
                self.acked.refusals.add(marker)


async def make_offer() -> str:
    """A recvonly H.264 offer from aiortc (one for the whole run: the server answers each POST afresh)."""
    from helpers.viewers import Viewer

    viewer = Viewer()
    try:
        return await viewer.offer()
    finally:
        await viewer.pc.close()


async def burst_and_kill(burst: Burst, proc: subprocess.Popen[bytes], kill_after_writes: int) -> float:
    """Run the burst and SIGKILL the server's group once `kill_after_writes` writes are acknowledged, with
    requests in flight; the seconds from the burst's start to the kill."""
    t0 = time.monotonic()
    task = asyncio.ensure_future(burst.run())
    while burst.acked.writes() < kill_after_writes and not task.done():
        await asyncio.sleep(0.002)
    killed_at = time.monotonic() - t0
    in_flight = burst.in_flight
    await asyncio.to_thread(kill_group, proc)
    await asyncio.wait_for(task, 30)
    assert task.done() and (in_flight > 0 or burst.acked.writes() < kill_after_writes), "kill after the burst"
    return killed_at


def kill_point(rng: random.Random, clients: int) -> int:
    """Somewhere in the middle of what a round can write."""
    most = clients * INCIDENTS_PER_CLIENT * WRITES_PER_LOOP
    return rng.randint(most // 5, most // 2)


# -- after the restart ------------------------------------------------------------------------------------------


@dataclass
class Check:
    missing: dict[str, list[str]]
    verify_rc: int
    verify_out: str
    integrity: str
    registry_same: bool
    audit_records: int
    verify_s: float

    @property
    def ok(self) -> bool:
        return not any(self.missing.values()) and self.verify_rc == 0 and self.integrity == "ok" and self.registry_same


def _present(conn: sqlite3.Connection, sql: str, keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    found: set[str] = set()
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        marks = ",".join("?" * len(chunk))
        found.update(str(row[0]) for row in conn.execute(sql.format(marks), chunk))
    return found


def check(db: str, acked: Acked, registry_before: list[tuple[Any, ...]]) -> Check:
    """Every acknowledged write on record, the audit chain verified by the CLI, the database and registry whole."""
    t0 = time.monotonic()
    verify = subprocess.run([sys.executable, "-m", "mediaserver.cli", "audit", "verify", "--db", db],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    verify_s = time.monotonic() - t0
    wanted = {
        "incident": (acked.incidents, "SELECT id FROM incidents WHERE id IN ({})"),
        "incident closed": (acked.closed, "SELECT id FROM incidents WHERE status != 'active' AND id IN ({})"),
        "token": (acked.tokens, "SELECT jti FROM tokens WHERE jti IN ({})"),
        "token revoked": (acked.revoked, "SELECT jti FROM tokens WHERE revoked_at IS NOT NULL AND jti IN ({})"),
        "audit incident.created": (acked.incidents, audit_keys_sql("incident.created", "incident")),
        "audit incident.closed": (acked.closed, audit_keys_sql("incident.closed", "incident")),
        "audit token.issued": (acked.tokens, audit_keys_sql("token.issued", "jti")),
        "audit token.revoked": (acked.revoked, audit_keys_sql("token.revoked", "jti")),
        "audit view.started": (acked.views_started, audit_keys_sql("view.started", "session")),
        "audit view.ended": (acked.views_ended, audit_keys_sql("view.ended", "session")),
        "audit access.denied": (acked.refusals, audit_keys_sql("access.denied", "camera")),
    }
    with contextlib.closing(sqlite3.connect(db)) as conn:
        missing = {what: sorted(set(keys) - _present(conn, sql, keys)) for what, (keys, sql) in wanted.items()}
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        records = int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])
    return Check(missing, verify.returncode, (verify.stdout + verify.stderr).strip(), integrity,
                 registry_rows(db) == registry_before, records, verify_s)  # fmt: skip


def audit_keys_sql(event: str, key: str) -> str:
    """Audit records of `event` whose `key` field is among the placeholders `{}`."""
    return (f"SELECT json_extract(record, '$.{key}') FROM audit WHERE event = '{event}' "
            f"AND json_extract(record, '$.{key}') IN ({{}})")  # fmt: skip
