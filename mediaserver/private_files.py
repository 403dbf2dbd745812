"""Files only the server's own user may read: the SQLite database (with its -wal/-shm/-journal) and key files.

The database holds camera credentials and sealed signing keys, so it is created 0600 whatever the process
umask is (a umask of 0077 around `sqlite3.connect`; SQLite gives its side files the main file's mode) and an
existing file another user could read is narrowed to 0600 when it is opened. A directory other users may
write to is only warned about: it may be the operator's, and anyone who can write there can swap the files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIDECARS = ("", "-wal", "-shm", "-journal")
PRIVATE = 0o600
# Each COMMIT fsyncs the WAL before it returns: an acknowledged write survives a power cut (signaling/db.py).
SYNCHRONOUS = "FULL"


def is_memory(path: str | Path) -> bool:
    return str(path) in ("", ":memory:") or str(path).startswith("file::memory:")


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside are readable by their owner only (the umask is process-wide: keep this short)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def restrict(db_path: str | Path) -> None:
    """Narrow the database and its side files to 0600 (they may predate this rule); warn about the directory."""
    if is_memory(db_path):
        return
    base = Path(db_path)
    for suffix in SIDECARS:
        path = base.with_name(base.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                os.chmod(path, PRIVATE)
    check_directory(base.parent)


def check_directory(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        mode = directory.stat().st_mode
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            log.warning("%s is writable by every user: keep the database and its keys in a private directory",
                        directory)  # fmt: skip


def connect(path: str | Path, **kwargs: Any) -> sqlite3.Connection:
    """`sqlite3.connect` in WAL mode, synchronous=FULL, with every file it creates private to this user."""
    with private_umask():
        db = sqlite3.connect(str(path), **kwargs)
        db.execute("PRAGMA journal_mode=WAL")  # creates -wal/-shm now, under the umask
    db.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
    restrict(path)
    return db


def create_private(path: Path, data: bytes) -> bool:
    """Write a new 0600 file; False (and nothing written) if it exists already. The file appears whole (written
    aside, then linked in), so a process racing to create the same key reads it complete, never empty."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and fails if the file exists
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True
