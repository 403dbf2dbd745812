"""Operators sign in to the console (accounts and sessions: signaling/operators.py).

    POST   /api/session      {"username", "password"} -> 201 whoami + Set-Cookie gt_session (HttpOnly,
                             SameSite=Strict, Path=/; over TLS or with --secure-cookies `__Host-gt_session`,
                             Secure); 401 wrong,
                             429 + Retry-After while the account or address is locked out (signaling/logins.py)
    GET    /api/session      whoami: operator, agency, role, csrf_token, expires_at; 401 without a live session
    DELETE /api/session      sign out (needs the CSRF token, like every cookie-authenticated change)

The `sessions` middleware resolves the cookie once per API request (only when no `Authorization` header is
sent: an agency app's credentials always win) and enforces CSRF (signaling/csrf.py) on state-changing calls,
so every handler that authenticates (incident_api.authenticate) sees the session as its agency's client.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from signaling import csrf
from signaling.access import ACCESS, Access
from signaling.errors import AccessDenied
from signaling.incidents import rfc3339
from signaling.json_body import read_json
from signaling.logins import guarded
from signaling.operators import MAX_PASSWORD, SIGNED_IN, Operator, Session

COOKIE = "gt_session"
SECURE_COOKIE = "__Host-gt_session"  # over TLS: the prefix stops a sibling subdomain from planting one
SESSION: web.RequestKey[Session] = web.RequestKey("operator_session", Session)
API_PREFIXES = ("/api/", "/ops/", "/oauth/")  # static files never pay for a session lookup


def signed_in(request: web.Request) -> Session | None:
    return request.get(SESSION)


def session_cookie(request: web.Request) -> str | None:
    return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    cookie = session_cookie(request)
    if not cookie or "Authorization" in request.headers or not request.path.startswith(API_PREFIXES):
        return await handler(request)
    access = request.app[ACCESS]
    session = access.operators.session(cookie)
    if session is None:
        return await handler(request)  # expired or signed out: as if no cookie (401 where one is needed)
    request[SESSION] = session
    reset = SIGNED_IN.set(session.operator.username)
    try:
        if request.method not in csrf.SAFE_METHODS and not _is_sign_in(request):
            problem = csrf.cross_site(request) or csrf.token_problem(request, session.csrf)
            if problem:
                raise access.deny(request, 403, "CSRF check failed", problem, **_who(session.operator))
        return await handler(request)
    finally:
        SIGNED_IN.reset(reset)


def _is_sign_in(request: web.Request) -> bool:
    """Signing in again (another operator at the same desk) needs no token: sign_in checks the origin itself."""
    return request.method == "POST" and request.path == "/api/session"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/session", sign_in)
    app.router.add_get("/api/session", whoami)
    app.router.add_delete("/api/session", sign_out)


def _who(operator: Operator) -> dict[str, Any]:
    return {"operator": operator.username, "agency": operator.agency, "client_id": operator.operator_id}


def _doc(access: Access, session: Session) -> dict[str, Any]:
    return {**session.operator.public(), "operator": session.operator.username, "csrf_token": session.csrf,
            "expires_at": rfc3339(session.expires_at),
            "idle_timeout_s": access.operators.settings.idle_s}  # fmt: skip


def _ref(session: Session) -> str:
    return session.id_hash[:16]  # ties an operator's records to one sign-in, reveals nothing of the cookie


async def sign_in(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    problem = csrf.cross_site(request)  # login CSRF: a foreign page must not sign the browser in as someone
    if problem:
        raise access.deny(request, 403, "cross-site sign-in refused", problem)
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"username", "password"}:
        raise AccessDenied(400, 'expected {"username": "...", "password": "..."}', "", "body")
    username, password = body["username"], body["password"]
    if not isinstance(username, str) or not 0 < len(username) <= 64:
        raise AccessDenied(400, "username: 1-64 characters", "", "username")
    if not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD:
        raise AccessDenied(400, f"password: 1-{MAX_PASSWORD} characters", "", "password")

    async def check() -> Operator | None:
        return await access.operators.check_password(username, password)

    operator = await guarded(access, request, f"operator:{username}", check, operator=username)
    if operator is None:
        raise access.deny(request, 401, "invalid username or password", operator=username)
    previous = session_cookie(request)
    if previous:
        access.operators.close_session(previous)  # one desk, one session: the earlier sign-in ends here
    cookie, session = access.operators.open_session(operator, request.remote)
    access.audit.append(
        "operator.signed_in", **_who(operator), remote=request.remote, detail={"session": _ref(session)}
    )
    response = web.json_response(_doc(access, session), status=201, headers={"Cache-Control": "no-store"})
    secure = request.secure or access.operators.settings.secure_cookies
    name = SECURE_COOKIE if secure else COOKIE
    response.set_cookie(name, cookie, path="/", httponly=True, samesite="Strict", secure=secure)
    return response


async def whoami(request: web.Request) -> web.Response:
    session = signed_in(request)
    if session is None:
        raise AccessDenied(401, "not signed in", "POST /api/session")
    return web.json_response(_doc(request.app[ACCESS], session), headers={"Cache-Control": "no-store"})


async def sign_out(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    session = signed_in(request)
    if session is None:
        raise AccessDenied(401, "not signed in", "POST /api/session")
    access.operators.close_session(session_cookie(request) or "")
    access.audit.append("operator.signed_out", **_who(session.operator), remote=request.remote,
                        detail={"session": _ref(session)})  # fmt: skip
    response = web.json_response({"signed_out": True})
    for name in (COOKIE, SECURE_COOKIE):
        if name in request.cookies:
            response.del_cookie(name, path="/", secure=name == SECURE_COOKIE)
    return response
