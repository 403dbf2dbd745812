"""Power loss (issue 13, item 4): `mediaserver serve --workers 2` killed with SIGKILL, front and workers at once,
in the middle of a burst of incident/token/view/refusal writes, three times; after each restart the audit chain
verifies, every write the client saw acknowledged is on record, and the registry is as it was.

What this proves and what it doesn't: SIGKILL loses the processes' memory, never the kernel's page cache, so it
shows that no acknowledged write waits in the server (each is committed before its answer) and that SQLite and
the anchors reopen clean after a crash mid-transaction. It cannot drop what the disk has not yet stored: that
is what `synchronous=FULL` is for (fsync of the WAL at each commit), checked below by its setting.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from helpers import power_loss as pl

from mediaserver import private_files
from mediaserver.registry import Registry
from signaling import db as signaling_db

ROUNDS = 3
CLIENTS = 3
FULL = 2  # PRAGMA synchronous: 1 NORMAL, 2 FULL


def synchronous(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


def test_every_connection_syncs_each_commit(tmp_path: Path) -> None:
    """An acknowledged write must survive the OS going down too: WAL with synchronous=FULL on the control
    plane's connection, the registry's and the CLI's (NORMAL would leave the last commits in the page cache)."""
    db = str(tmp_path / "gt.db")
    conn = signaling_db.connect(db)
    assert synchronous(conn) == FULL and conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    plain = private_files.connect(db)
    assert synchronous(plain) == FULL
    plain.close()
    registry = Registry(db)
    assert synchronous(registry._db) == FULL
    registry.close()


async def test_kill_9_mid_burst_loses_no_acknowledged_write(tmp_path: Path, h264_camera: str) -> None:
    t0 = time.monotonic()
    db = str(tmp_path / "gt.db")
    basics = pl.prepare(db, h264_camera, CLIENTS)
    registry = pl.registry_rows(db)
    offer = await pl.make_offer()
    rng = random.Random(13)
    seen = pl.Acked()
    base, proc = pl.start(db, tmp_path / "server.log")
    try:
        await pl.wait_streaming(base, proc)
        for n in range(ROUNDS):
            burst = pl.Burst(base, basics, offer, f"r{n}")
            killed_at = await pl.burst_and_kill(burst, proc, pl.kill_point(rng, CLIENTS))
            seen.merge(burst.acked)
            assert burst.acked.incidents and burst.acked.views_started and burst.acked.refusals, burst.acked
            base, proc = pl.start(db, tmp_path / "server.log")  # the restart: it must come up on what was left
            up = await pl.wait_streaming(base, proc)
            result = pl.check(db, seen, registry)  # every round's writes so far
            assert result.ok, (result, (tmp_path / "server.log").read_text()[-3000:])
            print(
                f"round {n}: killed at {killed_at:.2f} s after {burst.acked.writes()} acknowledged writes "
                f"({burst.acked.cut} cut off), back in {up:.1f} s, verify {result.verify_s:.2f} s"
            )
    finally:
        if proc.poll() is None:
            pl.kill_group(proc)
    assert time.monotonic() - t0 < 60
    # The check is not vacuous: a write the database never saw is reported missing.
    seen.tokens.add("never-issued")
    assert pl.check(db, seen, registry).missing["token"] == ["never-issued"]
