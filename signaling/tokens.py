"""Access tokens: ES256 JWTs in the shape of RFC 9068 (`typ: at+jwt`), issued and verified by the platform.

Two audiences keep the two uses apart: stream tokens (for one operator, one incident; WHEP) and API tokens
(an agency app's OAuth2 client-credentials grant). A token of one kind is useless at the other door.

The verifier is ours, strict and cheap, in this order (each refusal says why; nothing costs more than one
ECDSA verify and one primary-key lookup):
1. at most MAX_TOKEN_CHARS, three base64url segments, a 64-byte signature: before any parsing;
2. the header: no duplicate keys, only `alg`, `typ`, `kid` (so `jku`, `x5u`, `jwk`, `x5c`, `crit`... are
   refused, never followed), `alg` exactly "ES256" (not "es256", "none", "HS256"), a kid of our format that
   names one of our published keys (looked up in memory: never a path, never SQL);
3. the signature: r and s in [1, n-1] (no "psychic signatures"), then ECDSA P-256/SHA-256;
4. the payload: no duplicate keys, the registered claims typed and checked (iss, aud, exp, nbf, iat with
   leeway), `exp - iat` within the issuing limit;
5. the issue record: the jti is in the tokens table for this audience, client, iat and exp, unrevoked. A token
   signed with a stolen key but never issued is refused, and revocation applies at the next request;
6. the client is still enabled (`client_active`, the access layer's hook).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from signaling.db import is_utf8, write
from signaling.keys import KID_LEN, KeyStore

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
CREATE INDEX IF NOT EXISTS tokens_client ON tokens (client_id, exp);
"""
# Added after the first release (older databases get them on open): single-use tokens and their first use.
COLUMNS = {"single_use": "INTEGER NOT NULL DEFAULT 0", "used_at": "REAL"}

ALGORITHM = "ES256"
TYP = "at+jwt"
REQUIRED = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"]
REVOCATIONS_REFRESH_S = 0.5  # the sweep's view of revocations by another process (sweep 0.25 s: ends <= 1 s)
MAX_TOKEN_CHARS = 4096  # ours are under 1.5 KiB; refused before any parsing
HEADER_PARAMS = frozenset({"alg", "typ", "kid"})
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SHAPE = re.compile(r"([A-Za-z0-9_-]{2,1024})\.([A-Za-z0-9_-]{2,4000})\.([A-Za-z0-9_-]{0,1024})")
_SIGNATURE_CHARS = 86  # base64url of r | s, 32 bytes each
_KID = re.compile(f"[A-Za-z0-9_-]{{{KID_LEN}}}")
_ECDSA = ec.ECDSA(hashes.SHA256())


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
    single_use: bool = False
    used_at: float | None = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate key")
    return value


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _b64json(segment: str) -> dict[str, Any]:
    """A base64url JSON object, strictly: duplicate keys (which parsers resolve differently) and NaN refused."""
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if _canonical(raw) != segment:  # unused trailing bits set: another spelling of the same token
        raise ValueError("not canonical base64url")
    value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_not_a_number)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _segment(segment: str, what: str) -> dict[str, Any]:
    try:
        return _b64json(segment)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError) as exc:
        detail = "duplicate key" if "duplicate key" in str(exc) else "not a JSON object"
        raise TokenError(f"malformed token {what}: {detail}") from None


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, parsed by us so we can refuse bad algorithms before pyjwt sees the token."""
    return _segment(_split(token)[0], "header")


def _split(token: str) -> tuple[str, str, str]:
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"token too large (at most {MAX_TOKEN_CHARS} characters)")
    shape = _SHAPE.fullmatch(token)
    if shape is None:
        raise TokenError("malformed token (expected three base64url segments)")
    return shape[1], shape[2], shape[3]


def _signature(segment: str) -> bytes:
    if len(segment) != _SIGNATURE_CHARS:
        raise TokenError("bad signature (not an ES256 signature)")
    raw = base64.urlsafe_b64decode(segment + "==")
    if _canonical(raw) != segment:
        raise TokenError("bad signature (not an ES256 signature)")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    if not (0 < r < P256_ORDER and 0 < s < P256_ORDER):
        raise TokenError("bad signature (r or s out of range)")
    return encode_dss_signature(r, s)


def _canonical(raw: bytes) -> str:
    """The one base64url spelling of `raw`: a token verifies in exactly one spelling (fuzz/token_targets.py)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not -(2**63) < value < 2**63:
        raise TokenError(f"invalid claim: {name} must be a number")  # NaN, infinities, 10**400 (float() overflows)
    return float(value)


def _text(claims: dict[str, Any], name: str, limit: int = 256) -> str:
    value = claims[name]
    if not isinstance(value, str) or not 0 < len(value) <= limit or not is_utf8(value):
        raise TokenError(f"invalid claim: {name} must be a string")
    return value


class Tokens:
    def __init__(
        self,
        db: sqlite3.Connection,
        keys: KeyStore,
        settings: TokenSettings | None = None,
        client_active: Callable[[str], bool] | None = None,
    ) -> None:
        """`client_active(client_id)`: False refuses the client's tokens (a disabled client); cheap, cached."""
        self.db = db
        self.keys = keys
        self.settings = settings or TokenSettings()
        self.client_active = client_active
        db.executescript(SCHEMA)
        self._add_columns()
        self._revoked: set[str] = set()
        self._revoked_at = 0.0
        self._refresh_revocations()

    def _add_columns(self) -> None:
        have = {row[1] for row in self.db.execute("PRAGMA table_info(tokens)")}
        for name, kind in COLUMNS.items():
            if name not in have:
                try:
                    self.db.execute(f"ALTER TABLE tokens ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as e:  # another process added it first
                    if "duplicate column" not in str(e):
                        raise

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
        single_use: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        """Sign a token; records its jti (the verifier requires it; revocation, the audit trail). `single_use`:
        it opens one view only (see consume()). Returns (token, claims)."""
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
            **({"single_use": True} if single_use else {}),
            **(extra or {}),
        }
        key = self.keys.signing_key()
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": TYP})
        with write(self.db):
            self.db.execute(
                "INSERT INTO tokens (jti, audience, client_id, agency, subject, incident_id, issued_at, exp, "
                "single_use) VALUES (?,?,?,?,?,?,?,?,?)",
                (claims["jti"], audience, client_id, agency, subject, incident_id, now, claims["exp"], int(single_use)),
            )
        return token, claims

    # -- verifying -------------------------------------------------------------------------------------

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a valid, issued, unrevoked token for `audience`, or TokenError saying why not."""
        head, body, sig = _split(token)
        key = self._key(_segment(head, "header"))
        try:
            key.verify(_signature(sig), f"{head}.{body}".encode(), _ECDSA)
        except InvalidSignature:
            raise TokenError("bad signature") from None
        claims = _segment(body, "payload")
        self._check_claims(claims, audience)
        self._check_issued(claims, audience)
        if self.client_active is not None and not self.client_active(claims["client_id"]):
            raise TokenError("client disabled")
        return claims

    def _key(self, header: dict[str, Any]) -> ec.EllipticCurvePublicKey:
        extra = sorted(set(header) - HEADER_PARAMS)
        if extra:
            raise TokenError(f"header parameter not allowed: {', '.join(extra)[:64]}")
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise TokenError(f"algorithm not allowed: {str(alg)[:16]!r} (only ES256)")
        if header.get("typ") != TYP:
            raise TokenError("wrong token type (expected at+jwt)")
        kid = header.get("kid")
        key = self.keys.public_key(kid) if isinstance(kid, str) and _KID.fullmatch(kid) else None
        if key is None:
            raise TokenError("unknown signing key (kid)")
        return key

    def _check_claims(self, claims: dict[str, Any], audience: str) -> None:
        for name in REQUIRED:
            if name not in claims:
                raise TokenError(f"missing claim: {name}")
        s, now = self.settings, time.time()
        exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
        if claims["iss"] != s.issuer:
            raise TokenError("wrong issuer")
        if claims["aud"] != audience:
            raise TokenError("wrong audience")
        if exp <= now - s.leeway_s:
            raise TokenError("token expired")
        if nbf > now + s.leeway_s or iat > now + s.leeway_s:
            raise TokenError("token not yet valid")
        if exp - iat > s.max_ttl_s:
            raise TokenError(f"token lifetime over the issuing limit ({s.max_ttl_s} s)")
        for name in ("jti", "client_id", "sub"):
            _text(claims, name)

    def _check_issued(self, claims: dict[str, Any], audience: str) -> None:
        """The jti was issued by us, with these claims (a stolen key cannot stretch or move a real token, nor strip
        its single use: Access consumes a use only when the claim says so)."""
        row = self.db.execute(
            "SELECT audience, client_id, subject, issued_at, exp, incident_id, revoked_at, single_use FROM tokens "
            "WHERE jti=?",
            (claims["jti"],),
        ).fetchone()
        if row is None:
            raise TokenError("token not issued by this server")
        context = claims.get("incident")
        incident = context.get("id") if isinstance(context, dict) else None
        issued = (audience, claims["client_id"], claims["sub"], claims["iat"], claims["exp"], incident)
        if row[:6] != issued or (claims.get("single_use") is True) != bool(row[7]):
            raise TokenError("token does not match its issue record")
        if row[6] is not None:
            raise TokenError("token revoked")

    # -- single use ------------------------------------------------------------------------------------

    def consume(self, jti: str) -> bool:
        """A single-use token's one use: True the first time (atomically, across processes), then False.
        Tokens that are not single-use are never consumed (always True)."""
        with write(self.db):
            row = self.db.execute("SELECT single_use, used_at FROM tokens WHERE jti=?", (jti,)).fetchone()
            if row is None or not row[0]:
                return row is not None
            if row[1] is not None:
                return False
            self.db.execute("UPDATE tokens SET used_at=? WHERE jti=?", (time.time(), jti))
        return True

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
            "SELECT jti, audience, client_id, agency, subject, incident_id, exp, revoked_at, single_use, used_at "
            "FROM tokens WHERE jti=?",
            (jti,),
        ).fetchone()
        if row is None:
            return None
        jti_, audience, client_id, agency, subject, incident_id, exp, revoked_at, single_use, used_at = row
        return TokenRecord(jti_, audience, client_id, agency, subject, incident_id, exp, revoked_at,
                           bool(single_use), used_at)  # fmt: skip

    def revoke(self, jti: str) -> bool:
        """Mark a token revoked; False if unknown or already revoked."""
        with write(self.db):
            changed = self.db.execute(
                "UPDATE tokens SET revoked_at=? WHERE jti=? AND revoked_at IS NULL", (time.time(), jti)
            ).rowcount
        if changed:
            self._revoked.add(jti)
        return changed > 0

    def revoke_client(self, client_id: str) -> list[str]:
        """Revoke every unexpired token of a client (its secret leaked). Returns their jtis."""
        now = time.time()
        with write(self.db):
            jtis = [r[0] for r in self.db.execute(
                "SELECT jti FROM tokens WHERE client_id=? AND exp > ? AND revoked_at IS NULL", (client_id, now - 60)
            )]  # fmt: skip
            self.db.executemany("UPDATE tokens SET revoked_at=? WHERE jti=?", [(now, j) for j in jtis])
        self._revoked.update(jtis)
        return jtis
