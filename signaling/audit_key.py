"""The audit key: the HMAC secret that authenticates audit records and anchors (signaling/audit.py).

It must live outside the database, so that whoever can rewrite the database cannot re-sign what they wrote.
Where it comes from, first match wins:

1. `GOLDENTIME_AUDIT_KEY`: the secret itself (at least 16 characters);
2. `GOLDENTIME_AUDIT_KEY_FILE`: a file holding it (the operator's: it must exist, nothing is generated);
3. `<db>.audit-key` beside the database, generated (32 random bytes, hex, mode 0600) on first use. Convenient,
   and as exposed as the database itself: in production provide 1 or 2 from a place the database's writer
   can't reach (a secrets manager, a file owned by another user), and keep a copy for the auditors who verify.

An in-memory database gets a random per-process key (tests, demos).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ENV_KEY = "GOLDENTIME_AUDIT_KEY"
ENV_KEY_FILE = "GOLDENTIME_AUDIT_KEY_FILE"
MIN_LEN = 16


class AuditKeyError(RuntimeError):
    pass


def load_key(db_path: Path | None) -> bytes:
    if value := os.environ.get(ENV_KEY, "").strip():
        return _checked(value.encode(), ENV_KEY)
    if name := os.environ.get(ENV_KEY_FILE, "").strip():
        try:
            return _checked(Path(name).read_bytes().strip(), name)
        except FileNotFoundError:
            raise AuditKeyError(f"{ENV_KEY_FILE}={name}: no such file") from None
    if db_path is None:
        return secrets.token_bytes(32)
    return _beside(Path(f"{db_path}.audit-key"))


def _beside(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _checked(path.read_bytes().strip(), str(path))
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return _checked(path.read_bytes().strip(), str(path))


def _checked(key: bytes, where: str) -> bytes:
    if len(key) < MIN_LEN:
        raise AuditKeyError(f"audit key from {where} is shorter than {MIN_LEN} bytes")
    return key
