"""RTSP authentication: Basic (RFC 7617) and Digest (RFC 2617 / 7616, MD5, qop=auth or none)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable

from mediaserver.rtsp.errors import ErrorKind, RtspError

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenges(header: str) -> dict[str, dict[str, str]]:
    """WWW-Authenticate header lines -> {"digest": {...}, "basic": {...}}."""
    challenges: dict[str, dict[str, str]] = {}
    for line in header.split("\n"):
        scheme, _, rest = line.strip().partition(" ")
        if scheme:
            params = {m[0].lower(): m[1] if m[1] or not m[2] else m[2] for m in _PARAM.findall(rest)}
            challenges[scheme.lower()] = params
    return challenges


class Authenticator:
    """Answers a camera's 401 challenge and signs every later request the same way."""

    def __init__(
        self, username: str, password: str, cnonce: Callable[[], str] | None = None, allow_basic: bool = False
    ) -> None:
        self.username, self.password = username, password
        # Basic sends the password in clear on every request: only for a camera configured for it (allow_basic)
        self.allow_basic = allow_basic
        self._new_cnonce = cnonce or (lambda: os.urandom(8).hex())
        self._scheme = ""
        self._challenge: dict[str, str] = {}
        self._nc = 0

    @property
    def ready(self) -> bool:
        return bool(self._scheme)

    def challenge(self, header: str) -> None:
        challenges = parse_challenges(header)
        if "digest" in challenges:
            self._scheme, self._challenge = "digest", challenges["digest"]
            algorithm = self._challenge.get("algorithm", "MD5").upper()
            if algorithm not in ("MD5", "MD5-SESS"):
                raise RtspError(ErrorKind.AUTH_UNSUPPORTED, f"Digest algorithm {algorithm} is not supported")
            self._nc = 0
        elif "basic" in challenges:
            if not self.allow_basic:
                raise RtspError(
                    ErrorKind.AUTH_BASIC_REFUSED,
                    "camera asks for Basic auth, which would send its password in clear over plain TCP; "
                    "allow it for this camera with allow_basic=1 in its URL's query",
                )
            self._scheme = "basic"
        else:
            raise RtspError(ErrorKind.AUTH_UNSUPPORTED, f"unsupported WWW-Authenticate: {header[:80]!r}")

    def header(self, method: str, uri: str) -> str:
        if self._scheme == "basic":
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return f"Basic {token}"
        return self._digest(method, uri)

    def _digest(self, method: str, uri: str) -> str:
        c = self._challenge
        realm, nonce = c.get("realm", ""), c.get("nonce", "")
        ha1 = _md5(f"{self.username}:{realm}:{self.password}")
        cnonce = self._new_cnonce()
        if c.get("algorithm", "").upper() == "MD5-SESS":
            ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
        ha2 = _md5(f"{method}:{uri}")
        fields = [f'username="{self.username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
        if "auth" in [q.strip() for q in c.get("qop", "").split(",")]:
            self._nc += 1
            nc = f"{self._nc:08x}"
            response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            response = _md5(f"{ha1}:{nonce}:{ha2}")
        fields.append(f'response="{response}"')
        if "opaque" in c:
            fields.append(f'opaque="{c["opaque"]}"')
        if "algorithm" in c:
            fields.append(f"algorithm={c['algorithm']}")
        return "Digest " + ", ".join(fields)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
