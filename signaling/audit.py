"""The audit log: who saw which camera, for which incident, on what legal basis, when and from where.

Append-only and tamper-evident, in three layers:

- a hash chain: each record's `hash` is sha256 over the previous record's hash and this record's canonical JSON
  (sorted keys, no whitespace, as stored), so changing, removing or reordering a record breaks every hash after
  it. SQLite triggers refuse UPDATE and DELETE (a casual edit fails).
- a MAC per record: HMAC-SHA256 of its hash under the audit key, a secret kept outside the database
  (`audit_key.py`). Whoever rewrites records and recomputes every hash still cannot recompute the MACs.
- anchors: signed checkpoints (sequence number, head hash, HMAC) appended to `<db>.audit-anchors` beside the
  database, every `every_records` records or `every_s` seconds and at clean shutdown. Deleting the newest
  records leaves an anchor counting more records than the table holds: truncation is caught up to the last
  anchor (at most one interval of records can vanish unnoticed, the price of not fsyncing on every append).

Retention works by rollover (`rollover()`): the oldest records are written to an archive (with the anchors that
cover them), then removed; the rollover anchor carries the head hash of the last removed record, and the next
record left in the table must chain to it. `verify()` starts from the newest rollover anchor.

Appends read the chain's tail and insert in one IMMEDIATE transaction, so the server and a CLI process can both
write without forking the chain. `verify()` streams rows in batches; the server runs it in a thread on its own
connection (`verify_async`).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from signaling.audit_key import load_key
from signaling.db import connect, write
from signaling.incidents import rfc3339

log = logging.getLogger(__name__)
anchor_log = logging.getLogger("signaling.audit.anchor")  # ship this logger off-host: a second copy of the anchors

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
CREATE TABLE IF NOT EXISTS audit_segment (seq INTEGER PRIMARY KEY, head TEXT NOT NULL, at REAL NOT NULL);
"""
NO_UPDATE = """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"""
NO_DELETE = """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"""

GENESIS = "0" * 64
EVENTS = (
    "token.issued",
    "token.revoked",
    "view.started",
    "view.ended",
    "view.snapshot",
    "access.denied",
    "access.suppressed",  # refusals over the per-source limit, counted (signaling/refusals.py)
    "incident.created",
    "incident.updated",
    "incident.closed",
    "client.added",
    "operator.added",  # signaling/operators.py: console accounts and their sign-ins
    "operator.disabled",
    "operator.enabled",
    "operator.signed_in",
    "operator.signed_out",
    "client.disabled",  # signaling/clients.py: disable, enable, secret rotation
    "client.enabled",
    "client.rotated",
    "key.master_rotated",  # mediaserver/secret_box.py: secrets resealed under a new master key
    "key.rotated",
)
FIELDS = (
    "seq", "ts", "event", "operator", "agency", "client_id", "camera", "incident", "basis", "remote", "jti",
    "session", "reason", "duration_s", "detail", "prev_hash", "hash",
)  # fmt: skip
FIRST_ANCHORS = ("open", "adopt", "rollover")  # what may begin an anchors file
BATCH = 4096
# 1 when the indexed columns agree with the hashed JSON, 0 when not, -1 when it is not JSON (checked in C).
_CONSISTENT = (
    "CASE WHEN json_valid(record) THEN json_extract(record, '$.seq', '$.event', '$.agency', '$.camera', "
    "'$.incident') = json_array(seq, event, agency, camera, incident) ELSE -1 END"
)  # one parse of the JSON per row


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, record: dict[str, Any]) -> str:
    return _hash_text(prev_hash, canonical(record))


def _hash_text(prev_hash: str, text: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{text}".encode()).hexdigest()


def record_mac(key: bytes, digest: str) -> str:
    return hmac.digest(key, digest.encode(), "sha256").hex()


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    records: int  # records checked (those after the newest rollover)
    bad_seq: int | None = None  # the first missing or altered record
    problem: str = ""
    anchored: int = 0  # the highest sequence number an anchor vouches for
    first_seq: int = 1


@dataclass(frozen=True, slots=True)
class AnchorPolicy:
    every_records: int = 1000
    every_s: float = 10.0


def db_file(db: sqlite3.Connection) -> Path | None:
    """The main database file of a connection, or None when it is in memory."""
    for _, name, path in db.execute("PRAGMA database_list"):
        if name == "main":
            return Path(path) if path else None
    return None


class Anchors:
    """The anchors file: one JSON line per checkpoint, HMAC'd, appended (O_APPEND, 0600) and fsynced.
    In memory when the database is."""

    def __init__(self, path: Path | None, key: bytes) -> None:
        self.path, self.key = path, key
        self._memory: list[str] = []

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "mac": hmac.digest(self.key, canonical(body).encode(), "sha256").hex()}

    def valid(self, anchor: dict[str, Any]) -> bool:
        body = {k: v for k, v in anchor.items() if k != "mac"}
        return hmac.compare_digest(str(anchor.get("mac", "")), self.sign(body)["mac"])

    def lines(self) -> list[str]:
        if self.path is None:
            return list(self._memory)
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def exists(self) -> bool:
        return bool(self._memory) if self.path is None else self.path.exists()

    def append(self, anchor: dict[str, Any]) -> None:
        line = canonical(anchor)
        anchor_log.info("audit anchor %s", line)
        if self.path is None:
            self._memory.append(line)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())  # one write: lines from two processes never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, lines: list[str]) -> None:
        """Rollover only: a new anchors file (rollover anchor first), swapped in atomically."""
        if self.path is None:
            self._memory = list(lines)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "".join(line + "\n" for line in lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


class AuditLog:
    def __init__(self, db: sqlite3.Connection, key: bytes | None = None, policy: AnchorPolicy | None = None) -> None:
        self.db = db
        self.path = db_file(db)
        self.key = key if key is not None else load_key(self.path)
        self.policy = policy or AnchorPolicy()
        self.anchors = Anchors(Path(f"{self.path}.audit-anchors") if self.path else None, self.key)
        db.executescript(SCHEMA)
        db.execute(NO_UPDATE)
        db.execute(NO_DELETE)
        if "mac" not in {row[1] for row in db.execute("PRAGMA table_info(audit)")}:
            db.execute("ALTER TABLE audit ADD COLUMN mac TEXT")  # records before the key: covered by "adopt"
        self._anchored = self._start_anchors()
        self._anchored_at = time.monotonic()
        self._anchoring = False

    def _start_anchors(self) -> int:
        """The highest anchored seq; writes the first anchor of a new log (or of a log from before anchors)."""
        seqs = [int(a["seq"]) for a in self._parse(self.anchors.lines()) if isinstance(a, dict) and "seq" in a]
        if seqs:
            return max(seqs)
        tail = self._tail(self.db)
        if self.anchors.exists():
            return 0  # unreadable anchors: verify() says so
        if tail[0] == 0:
            self._write_anchor(tail, "open")
        elif self.db.execute("SELECT 1 FROM audit WHERE mac IS NOT NULL LIMIT 1").fetchone() is None:
            self._write_anchor(tail, "adopt")  # a log from before anchors: vouch for it as found
        else:
            log.error("audit anchors file %s is missing: truncation before now cannot be ruled out", self.anchors.path)
        return tail[0]

    @staticmethod
    def _parse(lines: list[str]) -> list[Any]:
        out: list[Any] = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(None)
        return out

    @staticmethod
    def _tail(db: sqlite3.Connection) -> tuple[int, str]:
        """(seq, hash) of the newest record, or the carried head of the last rollover, or (0, GENESIS)."""
        row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            row = db.execute("SELECT seq, head FROM audit_segment ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    # -- appending ----------------------------------------------------------------------------------------

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
            last, prev = self._tail(self.db)
            seq = last + 1
            record = {**body, "seq": seq, "ts": rfc3339(now), "event": event}
            text = canonical(record)
            digest = _hash_text(prev, text)
            self.db.execute(
                "INSERT INTO audit (seq, ts, event, agency, camera, incident, record, prev_hash, hash, mac) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (seq, now, event, body.get("agency"), body.get("camera"), body.get("incident"), text, prev, digest,
                 record_mac(self.key, digest)),
            )  # fmt: skip
        return {**record, "prev_hash": prev, "hash": digest}

    # -- anchors ------------------------------------------------------------------------------------------

    def _write_anchor(self, tail: tuple[int, str], reason: str) -> dict[str, Any]:
        if self.path is not None:
            _make_durable(self.db)  # the records an anchor counts must survive a power loss before it does
        anchor = self.anchors.sign({"v": 1, "seq": tail[0], "head": tail[1], "at": rfc3339(time.time()),
                                    "reason": reason})  # fmt: skip
        self.anchors.append(anchor)
        return anchor

    def anchor_due(self) -> bool:
        """New records since the last anchor, and `every_records` of them or `every_s` seconds."""
        last = self._tail(self.db)[0]
        if last <= self._anchored:
            return False
        return last - self._anchored >= self.policy.every_records or (
            time.monotonic() - self._anchored_at >= self.policy.every_s
        )

    def anchor(self, reason: str = "interval") -> dict[str, Any] | None:
        """Checkpoint the head now (blocking: fsyncs). None when nothing is new."""
        tail = self._tail(self.db)
        if tail[0] <= self._anchored and reason != "shutdown":
            return None
        anchor = self._write_anchor(tail, reason)
        self._anchored, self._anchored_at = max(self._anchored, tail[0]), time.monotonic()
        return anchor

    async def anchor_async(self, reason: str = "interval") -> None:
        """As anchor(), with the fsyncs and the file append in a thread (the server's sweep calls this)."""
        if self._anchoring:
            return
        tail = self._tail(self.db)  # on the loop: the connection is the loop's
        if tail[0] <= self._anchored:
            return
        self._anchoring = True
        try:
            await asyncio.to_thread(self._write_anchor, tail, reason)
            self._anchored, self._anchored_at = max(self._anchored, tail[0]), time.monotonic()
        finally:
            self._anchoring = False

    # -- verifying ----------------------------------------------------------------------------------------

    def verify(self) -> Verification:
        """Anchors first (MACs, the file's first line), then every record after the newest rollover: sequence,
        links, hashes, MACs, indexed columns, the anchors' heads; finally, truncation (an anchor counting more
        records than there are). Reports the first missing or altered record."""
        return _verify(self.db, self.anchors)

    async def verify_async(self) -> Verification:
        """verify() in a thread on its own connection, so the event loop never waits for the walk."""
        if self.path is None:
            return self.verify()  # in memory: no second connection can see it (tests and demos only)
        path, anchors = self.path, self.anchors

        def run() -> Verification:
            db = connect(path)
            try:
                return _verify(db, anchors)
            finally:
                db.close()

        return await asyncio.to_thread(run)

    # -- retention ----------------------------------------------------------------------------------------

    def rollover(self, before: float, archive: Path) -> tuple[int, int]:
        """Archive and remove the records older than `before` (unix time), keeping the chain verifiable: the
        archive gets the records (JSON export) and `<archive>.anchors`; the live anchors file restarts with a
        rollover anchor carrying the head of the last removed record. Refuses a broken chain (evidence stays).
        Returns (records archived, the carried seq)."""
        result = self.verify()
        if not result.ok:
            raise ValueError(f"audit chain broken at record {result.bad_seq}: {result.problem}; not rolling over")
        with write(self.db):
            newer = self.db.execute("SELECT min(seq) FROM audit WHERE ts >= ?", (before,)).fetchone()[0]
            tail = self._tail(self.db)
            last = int(newer) - 1 if newer is not None else tail[0]
            first = self.db.execute("SELECT min(seq) FROM audit").fetchone()[0]
            if first is None or last < first:
                return 0, 0
            head = str(self.db.execute("SELECT hash FROM audit WHERE seq=?", (last,)).fetchone()[0])
            rows = self.db.execute("SELECT record, prev_hash, hash FROM audit WHERE seq<=? ORDER BY seq", (last,))
            with open(archive, "w", encoding="utf-8") as out:
                count = export(({**json.loads(r), "prev_hash": p, "hash": h} for r, p, h in rows), out)
                out.flush()
                os.fsync(out.fileno())
            if self.anchors.path is not None and self.anchors.path.exists():
                shutil.copyfile(self.anchors.path, f"{archive}.anchors")
            carried = self.anchors.sign({"v": 1, "seq": last, "head": head, "at": rfc3339(time.time()),
                                         "reason": "rollover", "archive": archive.name, "records": count})  # fmt: skip
            lines = self.anchors.lines()
            later = [line for line, a in zip(lines, self._parse(lines), strict=True)
                     if isinstance(a, dict) and int(a.get("seq", 0)) > last]  # fmt: skip
            self.anchors.replace([canonical(carried), *later])
            anchor_log.info("audit anchor %s", canonical(carried))
            # Deleting is what the trigger forbids; dropping it here is inside the same transaction.
            self.db.execute("DROP TRIGGER audit_no_delete")
            self.db.execute("DELETE FROM audit WHERE seq<=?", (last,))
            self.db.execute("INSERT OR REPLACE INTO audit_segment (seq, head, at) VALUES (?,?,?)",
                            (last, head, time.time()))  # fmt: skip
            self.db.execute(NO_DELETE)
        return count, last

    # -- reading ------------------------------------------------------------------------------------------

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


def _make_durable(db: sqlite3.Connection) -> None:
    """Make every committed transaction durable before an anchor counts it. WAL with synchronous=NORMAL defers
    the WAL's fsync to the next checkpoint, and a checkpoint syncs the WAL first. Never fsync the database through
    a file descriptor of our own: closing any descriptor of the file drops every POSIX lock this process holds on
    it, and another process then takes itself for the last user and deletes the -shm under our connections."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _load_anchors(anchors: Anchors) -> tuple[list[dict[str, Any]], Verification | None]:
    parsed = AuditLog._parse(anchors.lines())
    good: list[dict[str, Any]] = []
    for n, anchor in enumerate(parsed, 1):
        if not isinstance(anchor, dict) or not anchors.valid(anchor):
            problem = f"anchor {n} of {anchors.path or 'memory'} is not signed by the audit key (forged or wrong key)"
            return [], Verification(False, 0, None, problem)
        good.append(anchor)
    return good, None


def _verify(db: sqlite3.Connection, anchors: Anchors) -> Verification:
    found, failed = _load_anchors(anchors)
    if failed:
        return failed
    has_rows = db.execute("SELECT 1 FROM audit LIMIT 1").fetchone() is not None
    if not found:
        if has_rows:
            return Verification(
                False, 0, None, "no anchors: the anchors file is missing, truncation can't be ruled out"
            )
        return Verification(True, 0)
    if found[0].get("reason") not in FIRST_ANCHORS:
        return Verification(False, 0, int(found[0]["seq"]), "anchors before this record are missing (file replaced?)")
    rollovers = [a for a in found if a.get("reason") == "rollover"]
    base: dict[str, Any] = max(rollovers, key=lambda a: int(a["seq"])) if rollovers else {"seq": 0, "head": GENESIS}
    start, prev = int(base["seq"]) + 1, str(base["head"])
    adopted = max((int(a["seq"]) for a in found if a.get("reason") == "adopt"), default=0)
    heads = {int(a["seq"]): str(a["head"]) for a in found if int(a["seq"]) >= start}
    anchored = max((int(a["seq"]) for a in found), default=0)
    expected, count = start, 0
    key, sha256, hmac_digest = anchors.key, hashlib.sha256, hmac.digest
    if start > 1 and db.execute("SELECT 1 FROM audit WHERE seq < ? LIMIT 1", (start,)).fetchone():
        # Only a rollover interrupted before its delete committed leaves older rows: the archived chain itself.
        row = db.execute("SELECT hash FROM audit WHERE seq = ?", (start - 1,)).fetchone()
        if row is None or row[0] != prev:
            first = db.execute("SELECT min(seq) FROM audit").fetchone()[0]
            return Verification(False, 0, int(first), "record from before the rollover's carried head", anchored, start)
    db.execute("BEGIN")  # one snapshot for the whole walk (WAL: writers go on)
    try:
        rows = db.execute(
            f"SELECT seq, record, prev_hash, hash, mac, {_CONSISTENT} FROM audit WHERE seq >= ? ORDER BY seq", (start,)
        )
        while batch := rows.fetchmany(BATCH):
            for seq, text, prev_hash, digest, mac, consistent in batch:
                count += 1
                # The common case inline (this loop is the cost of verify); anything unusual goes to _check.
                if not (
                    seq == expected and prev_hash == prev and consistent == 1 and seq not in heads
                    and sha256(f"{prev}\n{text}".encode()).hexdigest() == digest
                    and mac is not None and mac == hmac_digest(key, digest.encode(), "sha256").hex()
                ):  # fmt: skip
                    problem = _check(seq, expected, text, prev, prev_hash, digest, mac, consistent, key, adopted, heads)
                    if problem:
                        return Verification(False, count, min(seq, expected), problem, anchored, start)
                prev, expected = digest, seq + 1
    finally:
        db.execute("COMMIT")
    if anchored >= expected:
        problem = (f"records {expected}..{anchored} are missing: an anchor counts {anchored} records, the log ends at "
                   f"{expected - 1} (truncated)")  # fmt: skip
        return Verification(False, count, expected, problem, anchored, start)
    return Verification(True, count, None, "", anchored, start)


def _check(
    seq: int, expected: int, text: str, prev: str, prev_hash: str, digest: str, mac: str | None, consistent: int,
    key: bytes, adopted: int, heads: dict[int, str],
) -> str:  # fmt: skip
    """What is wrong with one record, or ""."""
    if seq != expected:
        return f"records {expected}..{seq - 1} are missing" if seq > expected else f"record out of order at {seq}"
    if consistent == -1:
        return "record is not JSON"
    if prev_hash != prev:
        return "link to the previous record is broken"
    if _hash_text(prev, text) != digest:
        return "record content does not match its hash"
    if mac is None:
        if seq > adopted:
            return "record has no MAC (added or rewritten without the audit key)"
    elif not hmac.compare_digest(mac, record_mac(key, digest)):
        return "record MAC does not match: rewritten with the hashes recomputed (or the wrong audit key)"
    if not consistent:
        return "indexed columns or sequence differ from the hashed record"
    if seq in heads and heads[seq] != digest:
        return "record differs from its anchor's head hash (rewritten)"
    return ""


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading single quote (OWASP CSV injection)."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def export(records: Iterable[dict[str, Any]], out: IO[str], fmt: str = "json") -> int:
    """Write records as JSON (one array) or CSV (FIELDS as columns, `detail` as JSON, formula-looking cells
    neutralised). Returns the count."""
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
        writer.writerow({k: neutralise(v) for k, v in row.items()})
        count += 1
    return count
