"""Operator accounts and their sign-in sessions: the people at the console (112, 119, the disaster room, the
city's CCTV centre), as opposed to agency clients (apps, signaling/clients.py).

- An account belongs to one agency and has one role: `operator` and `supervisor` act on their agency's
  incidents as the agency's client could (supervisors also add operators to their agency), `auditor` reads
  the audit log, `city-admin` is the city's video administrator (every camera, ops, accounts of any agency).
  Usernames are unique across agencies (sign-in names no agency).
- Passwords are hashed with scrypt at `PASSWORD_N` (one check costs a few ms; the lockout, not the hash's
  cost, is what stops guessing: signaling/lockout.py). A sign-in runs at most one scrypt, the same for an
  unknown username (a dummy hash), and none while the account or address is locked.
- Sessions live in the database so every process agrees and a sign-out is seen everywhere at once: the cookie
  carries 256 random bits, the table only their SHA-256. A session ends after `idle_s` without use (last use
  is written at most every `touch_s`), after `lifetime_s` in all, at sign-out, or when its account is
  disabled. Its CSRF token is an HMAC of the session id: bound to the session, not derivable from the table.
- For the access layer an operator is a `Client` (`as_client`) whose id is the account's `op-...` id: quotas,
  tokens and views key on it, and `active()` answers for it as `Clients.active` does for apps.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from contextvars import ContextVar
from dataclasses import dataclass

from signaling.clients import AGENCY_RE, Client, check_secret, hash_secret
from signaling.db import write

SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    operator_id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS operator_sessions (
    id_hash TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    remote TEXT
);
CREATE INDEX IF NOT EXISTS operator_sessions_by_operator ON operator_sessions (operator_id);
"""

# The signed-in operator's username for the request being handled (set by signaling/session_api.py): the
# access layer's refusal records name them even where the handler passes no operator.
SIGNED_IN: ContextVar[str | None] = ContextVar("signed_in_operator", default=None)
ROLES = ("operator", "supervisor", "auditor", "city-admin")
CLIENT_ROLE = {"operator": "agency", "supervisor": "agency", "auditor": "auditor", "city-admin": "admin"}
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
# 2^12 x r=8 (4 MiB): ~5 ms on an idle core (15 ms measured on the loaded 2-vCPU CI machine).
PASSWORD_N = 2**12
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # scrypt's cost grows with the input too: refuse megabyte passwords before hashing


class OperatorError(ValueError):
    """Invalid account data (names the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    idle_s: float = 15 * 60
    lifetime_s: float = 12 * 3600
    touch_s: float = 30.0  # last use written at most this often (bounded by idle_s / 4)
    secure_cookies: bool = False  # Secure even when the request is not seen as https (TLS ends before us)
    scrypt_n: int = PASSWORD_N


@dataclass(frozen=True, slots=True)
class Operator:
    operator_id: str
    agency: str
    username: str
    role: str

    def as_client(self) -> Client:
        """The access layer's view: the agency client this operator acts as."""
        return Client(self.operator_id, self.agency, self.username, CLIENT_ROLE[self.role])

    def public(self) -> dict[str, str]:
        return {"operator_id": self.operator_id, "agency": self.agency, "username": self.username, "role": self.role}


@dataclass(frozen=True, slots=True)
class Session:
    operator: Operator
    id_hash: str
    csrf: str
    created_at: float
    expires_at: float  # the sooner of idle and absolute expiry, as of now


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"goldentime csrf", "sha256").hexdigest()


class Operators:
    def __init__(self, db: sqlite3.Connection, settings: OperatorSettings | None = None) -> None:
        self.db = db
        self.settings = settings or OperatorSettings()
        db.executescript(SCHEMA)
        self._dummy = hash_secret(secrets.token_urlsafe(16), self.settings.scrypt_n)  # unknown names cost the same
        self._disabled: dict[str, bool] = {}
        self._disabled_at = -1.0

    # -- accounts ----------------------------------------------------------------------------------------

    def add(self, agency: str, username: str, role: str, password: str | None = None) -> tuple[Operator, str]:
        """Create an account; returns it and its password (generated, one-time, when none is given)."""
        if not AGENCY_RE.match(agency):
            raise OperatorError("agency", "a slug of lowercase letters, digits and '-' (e.g. police-112)")
        if not USERNAME_RE.match(username):
            raise OperatorError("username", "2-64 lowercase letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise OperatorError("role", f"one of {', '.join(ROLES)}")
        password = secrets.token_urlsafe(15) if password is None else password
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise OperatorError("password", f"{MIN_PASSWORD}-{MAX_PASSWORD} characters")
        operator = Operator("op-" + secrets.token_hex(8), agency, username, role)
        try:
            with write(self.db):
                self.db.execute(
                    "INSERT INTO operators (operator_id, agency, username, role, password_hash, created_at) "
                    "VALUES (?,?,?,?,?,?)",
                    (operator.operator_id, agency, username, role, hash_secret(password, self.settings.scrypt_n),
                     time.time()),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise OperatorError("username", "already taken") from None
        return operator, password

    def get(self, operator_id: str) -> Operator | None:
        row = self.db.execute(
            "SELECT operator_id, agency, username, role FROM operators WHERE operator_id=? AND disabled=0",
            (operator_id,),
        ).fetchone()
        return Operator(*row) if row else None

    def list(self, agency: str | None = None) -> list[Operator]:
        sql = "SELECT operator_id, agency, username, role FROM operators WHERE disabled=0"
        rows = self.db.execute(sql + (" AND agency=?" if agency else "") + " ORDER BY created_at",
                               (agency,) if agency else ())  # fmt: skip
        return [Operator(*r) for r in rows]

    def set_disabled(self, username: str, disabled: bool) -> Operator | None:
        """Disable (its sessions end) or enable an account; None if there is none by that name."""
        with write(self.db):
            row = self.db.execute(
                "SELECT operator_id, agency, username, role FROM operators WHERE username=?", (username,)
            ).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE operators SET disabled=? WHERE operator_id=?", (int(disabled), row[0]))
            if disabled:
                self.db.execute("DELETE FROM operator_sessions WHERE operator_id=?", (row[0],))
        self._disabled_at = -1.0
        return Operator(*row)

    def active(self, operator_id: str) -> bool:
        """The token verifier's and the sweep's question, as Clients.active: reread every 0.5 s."""
        if time.monotonic() - self._disabled_at > 0.5:
            rows = self.db.execute("SELECT operator_id, disabled FROM operators")
            self._disabled = {r[0]: bool(r[1]) for r in rows}
            self._disabled_at = time.monotonic()
        return self._disabled.get(operator_id) is False

    async def check_password(self, username: str, password: str) -> Operator | None:
        """Exactly one scrypt whatever the answer, in a thread (the caller has already consulted the lockout);
        the row is read here, on the caller's thread, so the connection is never used by two threads."""
        if len(password) > MAX_PASSWORD:  # no account has one: hash nothing long, answer no
            username, password = "", ""
        row = self.db.execute(
            "SELECT operator_id, agency, username, role, password_hash FROM operators WHERE username=? AND disabled=0",
            (username,),
        ).fetchone()
        ok = await asyncio.to_thread(check_secret, password, str(row[4]) if row else self._dummy)
        return Operator(*row[:4]) if ok and row else None

    # -- sessions ----------------------------------------------------------------------------------------

    def open_session(self, operator: Operator, remote: str | None) -> tuple[str, Session]:
        """A new session; returns the cookie value (shown to the browser only) and the session."""
        session_id = secrets.token_urlsafe(32)  # 256 bits
        now = time.time()
        id_hash = _digest(session_id)
        with write(self.db):
            self.db.execute(
                "INSERT INTO operator_sessions (id_hash, operator_id, created_at, last_seen, remote) "
                "VALUES (?,?,?,?,?)",
                (id_hash, operator.operator_id, now, now, remote),
            )
            self._expire(now)
        return session_id, Session(operator, id_hash, csrf_token(session_id), now, self._expiry(now, now))

    def session(self, session_id: str, now: float | None = None) -> Session | None:
        """The live session for a cookie value, its last use moved to now; None if unknown or expired."""
        now = time.time() if now is None else now
        id_hash = _digest(session_id)
        row = self.db.execute(
            "SELECT o.operator_id, o.agency, o.username, o.role, s.created_at, s.last_seen FROM operator_sessions s "
            "JOIN operators o ON o.operator_id = s.operator_id WHERE s.id_hash=? AND o.disabled=0",
            (id_hash,),
        ).fetchone()
        if row is None:
            return None
        created, seen = float(row[4]), float(row[5])
        if now >= self._expiry(created, seen):
            self.close_session(session_id)
            return None
        if now - seen >= min(self.settings.touch_s, self.settings.idle_s / 4):
            with write(self.db):
                self.db.execute("UPDATE operator_sessions SET last_seen=? WHERE id_hash=?", (now, id_hash))
            seen = now
        return Session(Operator(*row[:4]), id_hash, csrf_token(session_id), created, self._expiry(created, seen))

    def close_session(self, session_id: str) -> bool:
        with write(self.db):
            return self.db.execute("DELETE FROM operator_sessions WHERE id_hash=?", (_digest(session_id),)).rowcount > 0

    def _expiry(self, created: float, seen: float) -> float:
        return min(seen + self.settings.idle_s, created + self.settings.lifetime_s)

    def _expire(self, now: float) -> None:
        """Drop expired rows (inside a write transaction): the table holds live sessions only."""
        self.db.execute(
            "DELETE FROM operator_sessions WHERE last_seen <= ? OR created_at <= ?",
            (now - self.settings.idle_s, now - self.settings.lifetime_s),
        )
