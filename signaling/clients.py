"""Agency clients: the apps (112 CAD, 119 dispatch, a telecom's alert feed) and auditors that call the API.

An admin registers a client with `mediaserver clients add`; the secret is shown once and only a salted,
slow hash (scrypt) is stored, so a stolen database does not hand out credentials. Secrets are compared in
constant time. A successful check is remembered for a minute (keyed by a digest of the secret, never the
secret itself) because scrypt is deliberately slow and agency apps call with Basic auth on every request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from signaling.db import write

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
"""

ROLES = ("agency", "auditor")
AGENCY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
# scrypt cost: ~30-50 ms per check on one core; N=2^14, r=8 is the interactive-login recommendation.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
CACHE_SECONDS = 60.0


class ClientError(ValueError):
    """Invalid client registration (names the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    agency: str
    name: str
    role: str

    @property
    def is_auditor(self) -> bool:
        return self.role == "auditor"

    def public(self) -> dict[str, str]:
        return {"client_id": self.client_id, "agency": self.agency, "name": self.name, "role": self.role}


def hash_secret(secret: str, n: int = SCRYPT_N) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return "$".join(("scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)))


def check_secret(secret: str, stored: str) -> bool:
    """Recompute with the stored salt and parameters; compare in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest + "==")
        actual = hashlib.scrypt(
            secret.encode(), salt=base64.urlsafe_b64decode(salt + "=="), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Clients:
    def __init__(self, db: sqlite3.Connection, scrypt_n: int = SCRYPT_N) -> None:
        self.db = db
        self.scrypt_n = scrypt_n  # tests may lower the cost; the stored hash records what was used
        db.executescript(SCHEMA)
        self._verified: dict[tuple[str, bytes], float] = {}

    def add(self, agency: str, name: str, role: str = "agency") -> tuple[Client, str]:
        """Register a client; returns it and its secret (shown once, never stored)."""
        if not AGENCY_RE.match(agency):
            raise ClientError("agency", "a slug of lowercase letters, digits and '-' (e.g. police-112)")
        if not name.strip() or len(name) > 200:
            raise ClientError("name", "1-200 characters")
        if role not in ROLES:
            raise ClientError("role", f"one of {', '.join(ROLES)}")
        client = Client("gt-" + secrets.token_hex(8), agency, name.strip(), role)
        secret = secrets.token_urlsafe(32)
        with write(self.db):
            self.db.execute(
                "INSERT INTO clients (client_id, agency, name, role, secret_hash, created_at) VALUES (?,?,?,?,?,?)",
                (client.client_id, agency, client.name, role, hash_secret(secret, self.scrypt_n), time.time()),
            )
        return client, secret

    def get(self, client_id: str) -> Client | None:
        row = self.db.execute(
            "SELECT client_id, agency, name, role FROM clients WHERE client_id=? AND disabled=0", (client_id,)
        ).fetchone()
        return Client(*row) if row else None

    def list(self) -> list[Client]:
        rows = self.db.execute("SELECT client_id, agency, name, role FROM clients WHERE disabled=0 ORDER BY created_at")
        return [Client(*row) for row in rows]

    def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client if the secret matches, else None (unknown ids cost the same scrypt as wrong secrets)."""
        row, cached = self._lookup(client_id, secret)
        if cached:
            return row
        return self._remember(client_id, secret, row, check_secret(secret, self._stored(client_id, row)))

    async def authenticate_async(self, client_id: str, secret: str) -> Client | None:
        """As authenticate(), with the slow hash in a thread so the event loop keeps serving video."""
        row, cached = self._lookup(client_id, secret)
        if cached:
            return row
        ok = await asyncio.to_thread(check_secret, secret, self._stored(client_id, row))
        return self._remember(client_id, secret, row, ok)

    def _lookup(self, client_id: str, secret: str) -> tuple[Client | None, bool]:
        row = self.get(client_id)
        key = (client_id, hashlib.sha256(secret.encode()).digest())
        return row, row is not None and self._verified.get(key, 0.0) > time.monotonic()

    def _stored(self, client_id: str, row: Client | None) -> str:
        if row is None:
            return _DUMMY_HASH
        found = self.db.execute("SELECT secret_hash FROM clients WHERE client_id=?", (client_id,)).fetchone()
        return str(found[0]) if found else _DUMMY_HASH

    def _remember(self, client_id: str, secret: str, row: Client | None, ok: bool) -> Client | None:
        if not ok or row is None:
            return None
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[(client_id, hashlib.sha256(secret.encode()).digest())] = time.monotonic() + CACHE_SECONDS
        return row


_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))  # equalises timing for unknown client ids
