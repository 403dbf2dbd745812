"""ES256 signing keys with publish-ahead rotation, and the JWKS that verifiers read.

A key lives through three states:
    next     published in the JWKS, not yet used to sign (verifiers that cache the JWKS learn it first)
    active   signs new tokens (exactly one)
    retired  no longer signs; stays in the JWKS until every token it signed has expired
`mediaserver keys rotate` adds a `next` key whose `activate_at` is `publish_ahead` seconds away; the first
call to `signing_key()` after that promotes it and retires the previous active key. The very first key is
active at once: no token exists yet, so there is nothing to publish ahead of.

Private keys are in the server's database only sealed (PKCS#8 PEM, AES-256-GCM under the operator's master
key, purpose "signing-keys", bound to the kid: mediaserver/secret_box.py), so a copy of the database alone
cannot sign; keys stored in clear by older versions are sealed when the store opens. Parsed keys are cached by
`kid` so verification never parses PEM on the hot path. Other processes (the CLI) may rotate: `refresh()`
rereads the table.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from mediaserver import secret_box
from mediaserver.secret_box import SealedColumn, SecretBox
from signaling.db import write

SCHEMA = """
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    created_at REAL NOT NULL,
    activate_at REAL NOT NULL,
    retired_at REAL
);
"""

PRIVATE = SealedColumn("signing_keys", "kid", "private_pem", "signing-keys")
SEALED_COLUMNS = (PRIVATE,)
KID_LEN = 16  # base64url of 12 bytes of the public key's SHA-256 (new_private_key)
PUBLISH_AHEAD_S = 300.0  # how long a new key is in the JWKS before it signs
REFRESH_S = 5.0  # how often a server rereads the table (a CLI may have rotated)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    state: str
    activate_at: float
    retired_at: float | None

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.private.public_key()


def new_private_key() -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    kid = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:12]).rstrip(b"=").decode()  # a thumbprint
    return kid, key


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class KeyStore:
    def __init__(
        self,
        db: sqlite3.Connection,
        publish_ahead_s: float = PUBLISH_AHEAD_S,
        retain_s: float = 3700.0,
        box: SecretBox | None = None,
    ) -> None:
        """`retain_s`: how long a retired key stays published (the longest token lifetime plus leeway);
        `box`: the master key (default: the one configured for this database file)."""
        self.db = db
        self.publish_ahead_s = publish_ahead_s
        self.retain_s = retain_s
        self.box = box or secret_box.for_connection(db)
        db.executescript(SCHEMA)
        self.box.bind(db)
        with write(db):
            PRIVATE.seal_clear_rows(db, self.box)
        self._keys: dict[str, SigningKey] = {}
        self._public: dict[str, ec.EllipticCurvePublicKey] = {}
        self._loaded_at = 0.0
        self.refresh()

    def refresh(self) -> None:
        rows = self.db.execute("SELECT kid, private_pem, state, activate_at, retired_at FROM signing_keys").fetchall()
        keys: dict[str, SigningKey] = {}
        for kid, sealed, state, activate_at, retired_at in rows:
            cached = self._keys.get(kid)
            private = cached.private if cached else self._open(kid, sealed)
            keys[kid] = SigningKey(kid, private, state, activate_at, retired_at)
        self._keys = keys
        self._public = {kid: k.public for kid, k in keys.items() if self._published(k, time.time())}
        self._loaded_at = time.monotonic()

    def _open(self, kid: str, sealed: str) -> ec.EllipticCurvePrivateKey:
        pem = PRIVATE.open(self.box, kid, sealed) if secret_box.is_sealed(sealed) else sealed
        private = serialization.load_pem_private_key(pem.encode(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return private

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._loaded_at > REFRESH_S:
            self.refresh()

    def _published(self, key: SigningKey, now: float) -> bool:
        return key.state != "retired" or (key.retired_at or 0.0) + self.retain_s > now

    def rotate(self, publish_ahead_s: float | None = None) -> SigningKey:
        """Add the next key (or the first, active at once). Replaces a `next` key not yet promoted."""
        ahead = self.publish_ahead_s if publish_ahead_s is None else publish_ahead_s
        kid, private = new_private_key()
        now = time.time()
        with write(self.db):
            has_active = self.db.execute("SELECT 1 FROM signing_keys WHERE state='active'").fetchone() is not None
            self.db.execute("DELETE FROM signing_keys WHERE state='next'")
            state, activate_at = ("next", now + ahead) if has_active else ("active", now)
            self.db.execute(
                "INSERT INTO signing_keys (kid, private_pem, state, created_at, activate_at) VALUES (?,?,?,?,?)",
                (kid, PRIVATE.seal(self.box, kid, _pem(private)), state, now, activate_at),
            )
        self.refresh()
        return self._keys[kid]

    def signing_key(self) -> SigningKey:
        """The active key, promoting a due `next` key first (and creating the first key if none exists)."""
        self._maybe_refresh()
        now = time.time()
        due = [k for k in self._keys.values() if k.state == "next" and k.activate_at <= now]
        if due:
            self._promote(due[0].kid, now)
        active = [k for k in self._keys.values() if k.state == "active"]
        if not active:
            return self.rotate()
        return active[0]

    def _promote(self, kid: str, now: float) -> None:
        with write(self.db):
            # Re-check inside the lock: another process may have promoted it already.
            row = self.db.execute("SELECT state FROM signing_keys WHERE kid=?", (kid,)).fetchone()
            if row and row[0] == "next":
                self.db.execute("UPDATE signing_keys SET state='retired', retired_at=? WHERE state='active'", (now,))
                self.db.execute("UPDATE signing_keys SET state='active' WHERE kid=?", (kid,))
        self.refresh()

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """A published key by kid (cached); an unknown kid triggers one reread (another process may have
        rotated), rate-limited so junk kids cannot hammer the database."""
        key = self._public.get(kid)
        if key is None and time.monotonic() - self._loaded_at > 1.0:
            self.refresh()
            key = self._public.get(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        self._maybe_refresh()
        now = time.time()
        keys = []
        for k in sorted(self._keys.values(), key=lambda k: k.activate_at):
            if self._published(k, now):
                jwk = json.loads(ECAlgorithm.to_jwk(k.public))
                keys.append({**jwk, "kid": k.kid, "use": "sig", "alg": "ES256"})
        return {"keys": keys}

    def describe(self) -> list[dict[str, Any]]:
        """For `mediaserver keys list`: no private material."""
        now = time.time()
        return [
            {
                "kid": k.kid,
                "state": k.state,
                "activate_at": k.activate_at,
                "retired_at": k.retired_at,
                "published": self._published(k, now),
            }
            for k in sorted(self._keys.values(), key=lambda k: k.activate_at)
        ]
