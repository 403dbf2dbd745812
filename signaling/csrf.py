"""CSRF for the console's cookie: a state-changing call authenticated by the session cookie must come from our
own pages. Two independent checks, both required:

- same origin: `Origin`, when the browser sends one (every modern browser does on POST/PATCH/DELETE), must be
  this server's own scheme://host (as the edge sees it: behind a trusted proxy, X-Forwarded-Proto), and
  `Sec-Fetch-Site`, when sent, must be `same-origin` (or `none`: typed by the user);
- the double-submit token: `X-CSRF-Token` must equal the session's token (an HMAC of the session id, handed out
  by GET/POST /api/session only to our own same-origin script; a cross-site page can neither read it nor set
  the header without a CORS preflight we refuse).

Calls with an `Authorization` header (agency apps: Basic or bearer) are not cookie-authenticated and are not
checked; `SameSite=Strict` already keeps the cookie off cross-site requests in current browsers, and this holds
where it does not (older browsers, a sibling subdomain).
"""

from __future__ import annotations

import hmac

from aiohttp import web

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEADER = "X-CSRF-Token"


def cross_site(request: web.Request) -> str | None:
    """Why this request is not from our own origin, or None."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != f"{request.scheme}://{request.host}".lower():
        return f"Origin {origin[:100]} is not this server"
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site {site[:30]}"
    return None


def token_problem(request: web.Request, expected: str) -> str | None:
    """Why the request's CSRF token does not match the session's, or None."""
    sent = request.headers.get(HEADER, "")
    if not sent:
        return f"send the session's token in {HEADER}"
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        return f"{HEADER} does not match the session"
    return None
