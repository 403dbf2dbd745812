"""The operator's master key, and the sealing (AES-256-GCM) of the secrets the database holds.

The database is the server's working state and gets copied, backed up and read by admin tools; the master key
is what makes a copy of it useless to a thief. Where the key comes from, first match wins:

1. `--key-file F` on serve/demo/the CLI (`use_key_file`, which also sets the variable below for workers);
2. `GOLDENTIME_KEY_FILE=F`: a file the operator provides (it must exist; 64 hex characters, 32 bytes);
3. `<db>.key` beside the database, generated (0600) on first use with a warning: as exposed as the database
   to whoever can read that directory. Production keeps the key apart (another volume, a secrets manager).

An in-memory database gets a random per-process key (tests). Each purpose gets its own subkey (HKDF-SHA256):
"signing-keys" (the ES256 private keys, signaling/keys.py), "camera-credentials" (camera passwords,
mediaserver/registry.py), "audit-hmac" (free for the audit log). A sealed value is text,
`$gtbox1$<key id>$<base64url(nonce | ciphertext | tag)>`, bound (AAD) to its row and column, so it cannot
be moved to another row. Camera credentials are sealed deterministically (SIV-style nonce: an HMAC of the row
and the plaintext) so re-importing an unchanged camera writes nothing.

The database records which master key its secrets are under (`secret_box_meta`): a wrong or freshly generated
key is refused at open with a message naming both keys, instead of failing later row by row.
`rotate_master` reseals every sealed column under a new key in one transaction (`mediaserver keys
rotate-master --new-key-file F`, with the server stopped).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mediaserver.private_files import create_private, is_memory

log = logging.getLogger(__name__)

ENV_KEY_FILE = "GOLDENTIME_KEY_FILE"
PURPOSES = ("signing-keys", "camera-credentials", "audit-hmac")
PREFIX = "$gtbox1$"
META = "CREATE TABLE IF NOT EXISTS secret_box_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)"


class SecretBoxError(RuntimeError):
    """The master key is missing, malformed, or not the one this database's secrets are sealed under."""


class SecretBox:
    def __init__(self, master: bytes, source: str) -> None:
        if len(master) != 32:
            raise SecretBoxError(f"{source}: a master key is 32 bytes")
        self._master = master
        self.source = source  # where it came from, for messages (never the key itself)
        self._subkeys: dict[str, bytes] = {}
        self.key_id = self.derive("key-id")[:6].hex()  # names the key in sealed values and errors

    def derive(self, purpose: str) -> bytes:
        """A 32-byte subkey for one purpose (HKDF-SHA256 of the master key)."""
        key = self._subkeys.get(purpose)
        if key is None:
            hkdf = HKDF(hashes.SHA256(), 32, salt=b"goldentime secret box", info=f"goldentime/{purpose}".encode())
            key = self._subkeys[purpose] = hkdf.derive(self._master)
        return key

    def seal(self, purpose: str, plaintext: bytes, aad: bytes, deterministic: bool = False) -> str:
        if deterministic:  # same (row, plaintext) -> same nonce and ciphertext; different ones never share a nonce
            nonce = hmac.new(self.derive(purpose + "/nonce"), aad + b"\0" + plaintext, hashlib.sha256).digest()[:12]
        else:
            nonce = secrets.token_bytes(12)
        sealed = nonce + AESGCM(self.derive(purpose)).encrypt(nonce, plaintext, aad)
        return f"{PREFIX}{self.key_id}${base64.urlsafe_b64encode(sealed).decode()}"

    def open(self, purpose: str, value: str, aad: bytes) -> bytes:
        try:
            key_id, body = value[len(PREFIX) :].split("$", 1)
            raw = base64.urlsafe_b64decode(body)
        except (ValueError, binascii.Error):
            raise SecretBoxError("malformed sealed value") from None
        if key_id != self.key_id:
            raise SecretBoxError(f"sealed under master key {key_id}, not {self.key_id} ({self.source})")
        try:
            return AESGCM(self.derive(purpose)).decrypt(raw[:12], raw[12:], aad)
        except InvalidTag:
            raise SecretBoxError("sealed value does not authenticate (altered, or moved from another row)") from None

    def bind(self, db: sqlite3.Connection) -> None:
        """Record this key as the database's, or refuse if its secrets are under another key."""
        db.execute(META)
        db.execute("INSERT OR IGNORE INTO secret_box_meta VALUES ('master_key_id', ?)", (self.key_id,))
        if db.in_transaction:
            db.commit()
        stored = db.execute("SELECT v FROM secret_box_meta WHERE k='master_key_id'").fetchone()[0]
        if stored != self.key_id:
            raise SecretBoxError(
                f"this database's secrets are sealed under master key {stored}, but {self.source} holds key "
                f"{self.key_id}: pass the right --key-file (or {ENV_KEY_FILE})"
            )


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


# -- where the key comes from ----------------------------------------------------------------------------------

_boxes: dict[str, SecretBox] = {}


def use_key_file(path: str | Path) -> None:
    """The operator's `--key-file`: for this process and the workers it starts (they inherit the variable)."""
    os.environ[ENV_KEY_FILE] = str(Path(path).resolve())


def new_key_file(path: Path) -> bool:
    """Create a key file with a fresh random key (0600); False if the file exists already."""
    return create_private(path, (secrets.token_hex(32) + "\n").encode())


def read_key_file(path: Path) -> SecretBox:
    try:
        text = path.read_text().strip()
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise SecretBoxError(f"master key file {path} does not exist") from None
    if mode & 0o077:
        log.warning("master key file %s is readable by other users (mode %o): chmod 600 it", path, mode)
    try:
        master = bytes.fromhex(text)
    except ValueError:
        raise SecretBoxError(f"{path}: expected 64 hex characters") from None
    return SecretBox(master, str(path))


def load(db_path: str | Path, key_file: str | Path | None = None) -> SecretBox:
    """The master key for this database (see the module docstring for the order), cached per file."""
    if key_file is None and (name := os.environ.get(ENV_KEY_FILE, "").strip()):
        key_file = name
    if key_file is None and is_memory(db_path):
        return _cached(":memory:", lambda: SecretBox(secrets.token_bytes(32), "a per-process key"))
    if key_file is None:
        beside = Path(f"{db_path}.key")
        if new_key_file(beside):
            log.warning("generated the master key %s beside the database: in production keep it apart from the "
                        "database (--key-file or %s on another volume or from a secrets manager)", beside,
                        ENV_KEY_FILE)  # fmt: skip
        key_file = beside
    path = Path(key_file).resolve()
    return _cached(str(path), lambda: read_key_file(path))


def for_connection(db: sqlite3.Connection) -> SecretBox:
    """The master key for the database behind `db` (its main file's path)."""
    files = {row[1]: row[2] for row in db.execute("PRAGMA database_list")}
    return load(files.get("main") or ":memory:")


def _cached(name: str, make: Callable[[], SecretBox]) -> SecretBox:
    box = _boxes.get(name)
    if box is None:
        box = _boxes[name] = make()
    return box


def forget() -> None:
    """Drop cached keys (tests; after a rotation in the same process)."""
    _boxes.clear()


# -- sealed columns and rotation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A table column that holds sealed text: which row it belongs to is part of what is authenticated."""

    table: str
    id_column: str
    column: str
    purpose: str
    deterministic: bool = False

    def aad(self, row_id: str) -> bytes:
        return f"{self.table}.{self.column}:{row_id}".encode()

    def seal(self, box: SecretBox, row_id: str, plaintext: str) -> str:
        return box.seal(self.purpose, plaintext.encode(), self.aad(row_id), self.deterministic)

    def open(self, box: SecretBox, row_id: str, value: str) -> str:
        return box.open(self.purpose, value, self.aad(row_id)).decode()

    def seal_clear_rows(self, db: sqlite3.Connection, box: SecretBox) -> int:
        """Migration: seal every value still in clear (databases made before sealing). Returns rows sealed."""
        rows = db.execute(
            f"SELECT {self.id_column}, {self.column} FROM {self.table} "
            f"WHERE {self.column} IS NOT NULL AND substr({self.column}, 1, {len(PREFIX)}) != ?",
            (PREFIX,),
        ).fetchall()
        if rows:
            db.executemany(
                f"UPDATE {self.table} SET {self.column}=? WHERE {self.id_column}=?",
                [(self.seal(box, row_id, value), row_id) for row_id, value in rows],
            )
        return len(rows)


def rotate_master(db: sqlite3.Connection, old: SecretBox, new: SecretBox, columns: Iterable[SealedColumn]) -> int:
    """Reseal every value of `columns` from `old` to `new` and record `new` as the database's key, in one
    IMMEDIATE transaction (all or nothing). Returns the number of values resealed."""
    old.bind(db)  # refuses a wrong old key before anything is touched
    count = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for col in columns:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (col.table,)).fetchone() is None:
                continue
            col.seal_clear_rows(db, old)
            rows = db.execute(
                f"SELECT {col.id_column}, {col.column} FROM {col.table} WHERE {col.column} IS NOT NULL"
            ).fetchall()
            resealed = [(col.seal(new, row_id, col.open(old, row_id, value)), row_id) for row_id, value in rows]
            db.executemany(f"UPDATE {col.table} SET {col.column}=? WHERE {col.id_column}=?", resealed)
            count += len(resealed)
        db.execute("UPDATE secret_box_meta SET v=? WHERE k='master_key_id'", (new.key_id,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return count
