"""Fuzz targets for the token verifier (signaling/tokens.py Tokens.verify), with a real key store and real tokens
issued as tests/test_tokens.py does:
- `token`: a real token string, mutated (an attacker who holds one token and edits it). Only TokenError may
  escape, and a mutated token never verifies: a string other than an issued one that verifies is a finding;
- `token_forged`: claims the input chooses, signed with the real signing key (a stolen key: the issue record
  must still refuse them). Only TokenError may escape, and what verifies is an issued token's claims.
"""

from __future__ import annotations

import base64
import copy
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fuzz.incident_targets import NASTY
from fuzz.targets import Reader
from signaling.db import connect
from signaling.keys import KeyStore
from signaling.tokens import TokenError, Tokens, TokenSettings

AUDIENCE = "goldentime-stream"


class World:
    """A key store and a tokens table in a temporary database, with a few issued tokens (made once per process)."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="fuzz-tokens-")
        self.db: sqlite3.Connection = connect(Path(self.dir.name) / "gt.db")
        self.keys = KeyStore(self.db)
        self.tokens = Tokens(self.db, self.keys, TokenSettings(leeway_s=0))
        self.issued: dict[str, dict[str, Any]] = {}
        for sub, extra, incident, single in (
            ("officer kim", {"incident": {"id": "inc-1"}, "scope": "whep:view"}, "inc-1", False),
            ("officer lee", {"incident": {"id": "inc-2"}, "cameras": ["cam1", "cam2"]}, "inc-2", True),
            ("app", {"scope": "incidents"}, None, False),
        ):
            token, claims = self.tokens.issue(AUDIENCE, sub, "gt-1", "police-112", 3600, extra, incident, single)
            self.issued[token] = claims

    def sign(self, payload: bytes, header: bytes | None = None) -> str:
        key = self.keys.signing_key()
        head = header or json.dumps({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}).encode()
        signing_input = f"{_b64(head)}.{_b64(payload)}"
        r, s = decode_dss_signature(key.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_WORLD: World | None = None


def world() -> World:
    global _WORLD
    if _WORLD is None:
        _WORLD = World()
    return _WORLD


def _verify(w: World, token: str) -> dict[str, Any] | None:
    try:
        return w.tokens.verify(token, AUDIENCE)
    except TokenError as exc:
        assert exc.status in (401, 403) and str(exc), exc
        return None


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def token_text(data: bytes, w: World) -> str:
    """The token an input stands for: the input itself (one character per byte), or, after a 0 byte, an issued
    token with characters replaced by base64url ones (position, character: 3 bytes each), so that edits stay
    within the token's alphabet."""
    if data[:1] != b"\0" or len(data) < 2:
        return data.decode("latin-1")
    text = list(list(w.issued)[data[1] % len(w.issued)])
    for i in range(2, len(data) - 2, 3):
        text[int.from_bytes(data[i : i + 2], "big") % len(text)] = B64URL[data[i + 2] % 64]
    return "".join(text)


def token(data: bytes) -> None:
    w = world()
    text = token_text(data, w)
    claims = _verify(w, text)
    if claims is not None:
        assert text in w.issued, f"a mutated token verified: {text!r}"
        assert claims == w.issued[text]


def token_forged(data: bytes) -> None:
    """Input: a mode byte, then either a raw payload (mode even) or edits of an issued token's claims."""
    w = world()
    r = Reader(data)
    mode = r.u8()
    base = list(w.issued.values())[mode % len(w.issued)]
    if mode & 1 == 0:
        payload = data[1:]
    else:
        claims = dict(base)
        names = [*sorted(claims), "incident", "single_use", "extra"]
        for _ in range(1 + r.u8() % 4):
            name = names[r.u8() % len(names)]
            if r.u8() & 3 == 0:
                claims.pop(name, None)
            else:
                claims[name] = copy.deepcopy(NASTY[r.u8() % len(NASTY)])
        payload = json.dumps(claims).encode()  # NaN and Infinity as Python writes them: the verifier refuses them
    verified = _verify(w, w.sign(payload))
    if verified is not None:  # the claims the issue record binds are an issued token's (others are not bound)
        issued = [c for c in w.issued.values() if c["jti"] == verified["jti"]]
        assert issued and _bound(verified) == _bound(issued[0]), f"forged claims verified: {verified!r}"


def _bound(claims: dict[str, Any]) -> tuple[Any, ...]:
    """What the issue record binds (Tokens._check_issued): the rest of a stolen key's token is the attacker's."""
    context = claims.get("incident")
    incident = context.get("id") if isinstance(context, dict) else None
    single_use = claims.get("single_use") is True  # what Access reads to consume a use
    return (*(claims[k] for k in ("aud", "client_id", "sub", "iat", "exp", "jti")), incident, single_use)


def token_seeds() -> list[bytes]:
    w = world()
    out = [t.encode() for t in w.issued]
    head, body, sig = next(iter(w.issued)).split(".")
    out += [f"{head}.{body}.".encode(), f"{head}..{sig}".encode(), b"\0\0", b"\0\1\0\0\0", b"\0\2\1\0\7"]
    return out


def token_forged_seeds() -> list[bytes]:
    w = world()
    out = [bytes([2 * i]) + json.dumps(c).encode() for i, c in enumerate(w.issued.values())]
    out += [bytes([1, 0]), bytes([3, 1, 2, 1, 0]), bytes([5, 3, 4, 1, 0, 1, 5, 2, 1, 6])]
    return out
