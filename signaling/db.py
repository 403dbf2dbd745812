"""The control plane's SQLite: one file shared with the camera registry (`--db`), WAL so readers never block.

Every module of the access layer (clients, keys, tokens, incidents, audit) keeps its own tables in it and
takes the connection from here; writes go through `write()` so a chain (the audit log) or a state change
(key rotation) is read and written in one IMMEDIATE transaction, even with a CLI process writing beside
the server.

Durability: WAL with synchronous=FULL, so each COMMIT fsyncs the WAL before it returns, and whatever the
server answered 200/201 for (an incident, a token, the audit record of a view) survives a power cut as well
as a kill -9. With NORMAL a process crash loses nothing either, but an OS crash or power cut may drop the
commits since the last checkpoint (the audit anchors checkpoint, so anchored records were safe). FULL costs
0.4-2.6 ms more per audit record on the reference machine, by disk load (benchmarks/results/power-loss-*.md);
the access layer writes at people's pace, and refusals are rate-limited (signaling/refusals.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mediaserver import private_files


def connect(path: str | Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (see write()); check_same_thread=False because
    # the benchmark and tests may drive it from a helper thread, never concurrently.
    # The file and its -wal/-shm are 0600: they hold sealed keys and client hashes (mediaserver/private_files.py).
    db = private_files.connect(path, isolation_level=None, check_same_thread=False)
    # synchronous=FULL comes with it (private_files.connect): an answered write is on disk, not in the page cache.
    db.execute("PRAGMA busy_timeout=5000")  # a CLI `clients add` may hold the write lock briefly
    return db


@contextmanager
def write(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One IMMEDIATE transaction: takes the write lock up front, so read-then-write is atomic across processes."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def is_utf8(text: str) -> bool:
    """False for text with a lone surrogate ("\\ud800" is valid JSON): SQLite binds UTF-8, so storing or looking
    it up would raise (a 500) instead of a clear refusal."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
