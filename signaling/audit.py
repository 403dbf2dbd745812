"""The audit log: who saw which camera, for which incident, on what legal basis, when and from where.

Append-only and tamper-evident. Each record's `hash` is sha256 over the previous record's hash and this
record's canonical JSON (sorted keys, no whitespace), so changing, removing or reordering any record breaks
every hash after it; `verify()` walks the chain. SQLite triggers refuse UPDATE and DELETE on the table
(a casual edit fails; a determined one that drops the triggers is still caught by `verify()`).

Appends read the chain's tail and insert in one IMMEDIATE transaction, so the server and a CLI process
can both write without forking the chain.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from signaling.db import write
from signaling.incidents import rfc3339

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    agency TEXT,
    camera TEXT,
    incident TEXT,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_camera ON audit (camera, ts);
CREATE INDEX IF NOT EXISTS audit_incident ON audit (incident, ts);
CREATE INDEX IF NOT EXISTS audit_agency ON audit (agency, ts);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""

GENESIS = "0" * 64
EVENTS = (
    "token.issued",
    "token.revoked",
    "view.started",
    "view.ended",
    "view.snapshot",
    "access.denied",
    "incident.created",
    "incident.updated",
    "incident.closed",
    "client.added",
    "key.rotated",
)
FIELDS = (
    "seq", "ts", "event", "operator", "agency", "client_id", "camera", "incident", "basis", "remote", "jti",
    "session", "reason", "duration_s", "detail", "prev_hash", "hash",
)  # fmt: skip


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, record: dict[str, Any]) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical(record)}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    records: int
    bad_seq: int | None = None
    problem: str = ""


class AuditLog:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Add one record; `fields` are among FIELDS (None values are dropped). Returns the stored record."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown audit field(s): {', '.join(sorted(unknown))}")
        now = time.time()
        body = {k: v for k, v in fields.items() if v is not None}
        with write(self.db):
            tail = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (tail[0] + 1, tail[1]) if tail else (1, GENESIS)
            record = {**body, "seq": seq, "ts": rfc3339(now), "event": event}
            digest = chain_hash(prev, record)
            self.db.execute(
                "INSERT INTO audit (seq, ts, event, agency, camera, incident, record, prev_hash, hash) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (seq, now, event, body.get("agency"), body.get("camera"), body.get("incident"), canonical(record),
                 prev, digest),
            )  # fmt: skip
        return {**record, "prev_hash": prev, "hash": digest}

    def verify(self) -> Verification:
        """Walk the chain from the first record: sequence, links, hashes, and the indexed columns."""
        prev, expected_seq = GENESIS, 1
        count = 0
        rows = self.db.execute(
            "SELECT seq, ts, event, agency, camera, incident, record, prev_hash, hash FROM audit ORDER BY seq"
        )
        for seq, _ts, event, agency, camera, incident, text, prev_hash, digest in rows:
            count += 1
            problem = ""
            try:
                record = json.loads(text)
            except ValueError:
                return Verification(False, count, seq, "record is not JSON")
            if seq != expected_seq or record.get("seq") != seq:
                problem = f"sequence gap or reorder (expected {expected_seq})"
            elif prev_hash != prev:
                problem = "link to the previous record is broken"
            elif chain_hash(prev, record) != digest:
                problem = "record content does not match its hash"
            elif (record.get("event"), record.get("agency"), record.get("camera"), record.get("incident")) != (
                event,
                agency,
                camera,
                incident,
            ):
                problem = "indexed columns differ from the hashed record"
            if problem:
                return Verification(False, count, seq, problem)
            prev, expected_seq = digest, seq + 1
        return Verification(True, count)

    def query(
        self,
        camera: str | None = None,
        incident: str | None = None,
        agency: str | None = None,
        since: float | None = None,
        until: float | None = None,
        event: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("camera", camera), ("incident", incident), ("agency", agency), ("event", event)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if since is not None:
            where.append("ts>=?")
            args.append(since)
        if until is not None:
            where.append("ts<=?")
            args.append(until)
        sql = "SELECT record, prev_hash, hash FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq LIMIT ?"
        return [{**json.loads(r), "prev_hash": p, "hash": h} for r, p, h in self.db.execute(sql, (*args, int(limit)))]

    def all(self) -> Iterator[dict[str, Any]]:
        for r, p, h in self.db.execute("SELECT record, prev_hash, hash FROM audit ORDER BY seq"):
            yield {**json.loads(r), "prev_hash": p, "hash": h}


def export(records: Iterable[dict[str, Any]], out: IO[str], fmt: str = "json") -> int:
    """Write records as JSON (one array) or CSV (FIELDS as columns, `detail` as JSON). Returns the count."""
    count = 0
    if fmt == "json":
        out.write("[\n")
        for record in records:
            out.write(("" if count == 0 else ",\n") + canonical(record))
            count += 1
        out.write("\n]\n")
        return count
    if fmt != "csv":
        raise ValueError("format is json or csv")
    writer = csv.DictWriter(out, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        row = dict(record)
        if "detail" in row:
            row["detail"] = canonical(row["detail"]) if isinstance(row["detail"], dict) else row["detail"]
        writer.writerow(row)
        count += 1
    return count
