"""Access tokens: ES256 JWTs in the shape of RFC 9068 (`typ: at+jwt`), issued and verified by the platform.

Two audiences keep the two uses apart: stream tokens (for one operator, one incident; WHEP) and API tokens
(an agency app's OAuth2 client-credentials grant). A token of one kind is useless at the other door.

Verification accepts ONLY ES256: the algorithm list is pinned and the key is looked up by `kid` among our
own published keys (never taken from the token), so `alg: none` and the HS256-with-the-public-key trick
fail before any signature math. Parsed public keys are cached (KeyStore), revoked jtis are an in-memory
set, so a check costs one ECDSA verify plus a few dict lookups.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from signaling.db import write
from signaling.keys import KeyStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    jti TEXT PRIMARY KEY,
    audience TEXT NOT NULL,
    client_id TEXT NOT NULL,
    agency TEXT NOT NULL,
    subject TEXT NOT NULL,
    incident_id TEXT,
    issued_at REAL NOT NULL,
    exp REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS tokens_incident ON tokens (incident_id);
"""

ALGORITHM = "ES256"
TYP = "at+jwt"
REQUIRED = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"]
REVOCATIONS_REFRESH_S = 1.0  # another process (or node) may revoke


@dataclass(frozen=True, slots=True)
class TokenSettings:
    issuer: str = "https://goldentime.seoul/"
    stream_audience: str = "goldentime:whep"
    api_audience: str = "goldentime:api"
    stream_ttl_s: int = 600  # minutes-long: a stolen token is short-lived and revocable
    api_ttl_s: int = 900
    max_ttl_s: int = 3600
    leeway_s: int = 5  # clock skew between our nodes and agency systems


class TokenError(Exception):
    """A token that must be refused; `reason` is safe to show the caller."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class TokenRecord:
    jti: str
    audience: str
    client_id: str
    agency: str
    subject: str
    incident_id: str | None
    exp: float
    revoked_at: float | None


def _b64json(segment: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, parsed by us so we can refuse bad algorithms before pyjwt sees the token."""
    try:
        return _b64json(token.split(".", 1)[0])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise TokenError("malformed token") from None


class Tokens:
    def __init__(self, db: sqlite3.Connection, keys: KeyStore, settings: TokenSettings | None = None) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings or TokenSettings()
        db.executescript(SCHEMA)
        self._revoked: set[str] = set()
        self._revoked_at = 0.0
        self._refresh_revocations()

    # -- issuing ---------------------------------------------------------------------------------------

    def issue(
        self,
        audience: str,
        subject: str,
        client_id: str,
        agency: str,
        ttl_s: int,
        extra: Mapping[str, Any] | None = None,
        incident_id: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Sign a token; records its jti (for revocation and the audit trail). Returns (token, claims)."""
        ttl = max(1, min(int(ttl_s), self.settings.max_ttl_s))
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            **(extra or {}),
        }
        key = self.keys.signing_key()
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": TYP})
        with write(self.db):
            self.db.execute(
                "INSERT INTO tokens (jti, audience, client_id, agency, subject, incident_id, issued_at, exp) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (claims["jti"], audience, client_id, agency, subject, incident_id, now, claims["exp"]),
            )
        return token, claims

    # -- verifying -------------------------------------------------------------------------------------

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a valid, unrevoked token for `audience`, or TokenError saying why not."""
        header = unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"algorithm not allowed: {header.get('alg')!r} (only ES256)")
        if header.get("typ") != TYP:
            raise TokenError("wrong token type (expected at+jwt)")
        kid = header.get("kid")
        key = self.keys.public_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("unknown signing key (kid)")
        s = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim: {exc.claim}") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        if self.is_revoked(claims["jti"]):
            raise TokenError("token revoked")
        return claims

    # -- revocation ------------------------------------------------------------------------------------

    def is_revoked(self, jti: str) -> bool:
        if time.monotonic() - self._revoked_at > REVOCATIONS_REFRESH_S:
            self._refresh_revocations()
        return jti in self._revoked

    def _refresh_revocations(self) -> None:
        # Only unexpired tokens matter: an expired one fails on `exp` anyway, so the set stays small.
        rows = self.db.execute(
            "SELECT jti FROM tokens WHERE revoked_at IS NOT NULL AND exp > ?", (time.time() - 60,)
        ).fetchall()
        self._revoked = {r[0] for r in rows}
        self._revoked_at = time.monotonic()

    def get(self, jti: str) -> TokenRecord | None:
        row = self.db.execute(
            "SELECT jti, audience, client_id, agency, subject, incident_id, exp, revoked_at FROM tokens WHERE jti=?",
            (jti,),
        ).fetchone()
        return TokenRecord(*row) if row else None

    def revoke(self, jti: str) -> bool:
        """Mark a token revoked; False if unknown or already revoked."""
        with write(self.db):
            changed = self.db.execute(
                "UPDATE tokens SET revoked_at=? WHERE jti=? AND revoked_at IS NULL", (time.time(), jti)
            ).rowcount
        if changed:
            self._revoked.add(jti)
        return changed > 0
