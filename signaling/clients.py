"""Agency clients: the apps (112 CAD, 119 dispatch, a telecom's alert feed) and auditors that call the API.

An admin registers a client with `mediaserver clients add`; the secret is shown once and only a salted,
slow hash (scrypt) is stored, so a stolen database does not hand out credentials. Secrets are compared in
constant time. A successful check is remembered for a minute (keyed by a digest of the secret, never the
secret itself) because scrypt is deliberately slow and agency apps call with Basic auth on every request;
the remembered check is tied to the stored hash, so a rotated secret stops working at once in every process.
Wrong secrets back off per client id and per address (signaling/logins.py): 429 + Retry-After, no scrypt while
locked; a secret remembered as right is let through the lock.

`mediaserver clients disable|enable|rotate`: a disabled client can't authenticate, its tokens are refused
(`active()`, the token verifier's hook, rereads the flags every ACTIVE_REFRESH_S) and the access sweep ends
its live views; `rotate` replaces the secret (shown once).
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

ROLES = ("agency", "auditor", "admin")  # admin: the city's video administrators (ops, every camera)
AGENCY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
# scrypt cost: ~30-50 ms per check on one core; N=2^14, r=8 is the interactive-login recommendation.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
CACHE_SECONDS = 60.0
ACTIVE_REFRESH_S = 0.5  # disable by another process reaches verifiers and the sweep (0.25 s) within 1 s


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

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

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
        self._verified: dict[tuple[str, bytes], tuple[float, str]] = {}  # -> (until, the hash it matched)
        self._disabled: dict[str, bool] = {}
        self._disabled_at = -ACTIVE_REFRESH_S

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
        found = self._enabled(client_id)
        return found[0] if found else None

    def _enabled(self, client_id: str) -> tuple[Client, str] | None:
        row = self.db.execute(
            "SELECT client_id, agency, name, role, secret_hash FROM clients WHERE client_id=? AND disabled=0",
            (client_id,),
        ).fetchone()
        return (Client(*row[:4]), str(row[4])) if row else None

    # -- disable, enable, rotate -----------------------------------------------------------------------

    def set_disabled(self, client_id: str, disabled: bool) -> bool:
        """Disable or enable a client; False if there is no such client."""
        with write(self.db):
            changed = self.db.execute(
                "UPDATE clients SET disabled=? WHERE client_id=?", (int(disabled), client_id)
            ).rowcount
        self._disabled_at = -ACTIVE_REFRESH_S  # this process sees it at once
        return changed > 0

    def rotate(self, client_id: str) -> str | None:
        """A new secret for the client (shown once; the old one stops working at once); None if unknown."""
        secret = secrets.token_urlsafe(32)
        with write(self.db):
            changed = self.db.execute(
                "UPDATE clients SET secret_hash=? WHERE client_id=?", (hash_secret(secret, self.scrypt_n), client_id)
            ).rowcount
        return secret if changed else None

    def describe(self, client_id: str) -> dict[str, object] | None:
        """Any client, disabled ones too (for the CLI)."""
        row = self.db.execute(
            "SELECT client_id, agency, name, role, disabled FROM clients WHERE client_id=?", (client_id,)
        ).fetchone()
        return {**Client(*row[:4]).public(), "disabled": bool(row[4])} if row else None

    def active(self, client_id: str) -> bool:
        """Is the client registered and enabled? The token verifier and the sweep ask on every check: the flags
        are reread every ACTIVE_REFRESH_S (a small table), an id not among them is looked up once."""
        if time.monotonic() - self._disabled_at > ACTIVE_REFRESH_S:
            self._disabled = {r[0]: bool(r[1]) for r in self.db.execute("SELECT client_id, disabled FROM clients")}
            self._disabled_at = time.monotonic()
        disabled = self._disabled.get(client_id)
        if disabled is None:
            row = self.db.execute("SELECT disabled FROM clients WHERE client_id=?", (client_id,)).fetchone()
            if row is None:
                return False
            disabled = self._disabled[client_id] = bool(row[0])
        return not disabled

    def list(self) -> list[Client]:
        rows = self.db.execute("SELECT client_id, agency, name, role FROM clients WHERE disabled=0 ORDER BY created_at")
        return [Client(*row) for row in rows]

    def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client if the secret matches, else None (unknown ids cost the same scrypt as wrong secrets)."""
        found, cached = self._lookup(client_id, secret)
        if cached:
            return found[0] if found else None
        stored = found[1] if found else _DUMMY_HASH
        return self._remember(client_id, secret, found, check_secret(secret, stored))

    async def authenticate_async(self, client_id: str, secret: str) -> Client | None:
        """As authenticate(), with the slow hash in a thread so the event loop keeps serving video."""
        found, cached = self._lookup(client_id, secret)
        if cached:
            return found[0] if found else None
        stored = found[1] if found else _DUMMY_HASH
        ok = await asyncio.to_thread(check_secret, secret, stored)
        return self._remember(client_id, secret, found, ok)

    def remembered(self, client_id: str, secret: str) -> Client | None:
        """The client if this very secret matched its current hash within CACHE_SECONDS (no scrypt). The login
        guard (signaling/logins.py) asks this before the lockout: an app calling with its right secret keeps
        working while someone floods wrong secrets for its id."""
        found, cached = self._lookup(client_id, secret)
        return found[0] if cached and found else None

    def _lookup(self, client_id: str, secret: str) -> tuple[tuple[Client, str] | None, bool]:
        """The enabled client and its stored hash, and whether this secret matched that very hash lately."""
        found = self._enabled(client_id)
        until, matched = self._verified.get((client_id, hashlib.sha256(secret.encode()).digest()), (0.0, ""))
        return found, found is not None and until > time.monotonic() and hmac.compare_digest(matched, found[1])

    def _remember(self, client_id: str, secret: str, found: tuple[Client, str] | None, ok: bool) -> Client | None:
        if not ok or found is None:
            return None
        if len(self._verified) > 10_000:
            self._verified.clear()
        key = (client_id, hashlib.sha256(secret.encode()).digest())
        self._verified[key] = (time.monotonic() + CACHE_SECONDS, found[1])
        return found[0]


_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))  # equalises timing for unknown client ids
