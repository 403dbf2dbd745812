"""The control plane's SQLite: one file shared with the camera registry (`--db`), WAL so readers never block.

Every module of the access layer (clients, keys, tokens, incidents, audit) keeps its own tables in it and
takes the connection from here; writes go through `write()` so a chain (the audit log) or a state change
(key rotation) is read and written in one IMMEDIATE transaction, even with a CLI process writing beside
the server.
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
    db.execute("PRAGMA busy_timeout=5000")  # a CLI `clients add` may hold the write lock briefly
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes, fast commits
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
