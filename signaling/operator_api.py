"""Operator accounts over the API (the CLI's `mediaserver operators add` for people who run the console).

    POST   /api/operators    {"agency", "username", "role", "password"?} -> 201 the account (+ "password",
                             one time, when none was given)
    GET    /api/operators    the accounts the caller may manage

Who may: the city's video administrators (a `city-admin` operator or an `admin` client), any agency and role;
a `supervisor`, their own agency's `operator` and `supervisor` accounts. Everyone else: 403, audited.
"""

from __future__ import annotations

from aiohttp import web

from signaling.access import ACCESS
from signaling.errors import AccessDenied
from signaling.incident_api import authenticate, operator_of
from signaling.json_body import read_json
from signaling.operators import OperatorError
from signaling.session_api import signed_in

SUPERVISOR_ROLES = ("operator", "supervisor")


async def _manager(request: web.Request) -> str | None:
    """The agency the caller manages accounts of (None: every agency), or 403."""
    client = await authenticate(request)
    if client.is_admin:
        return None
    session = signed_in(request)
    if session is not None and session.operator.role == "supervisor":
        return session.operator.agency
    raise request.app[ACCESS].deny(request, 403, "city admins and supervisors only", client_id=client.client_id,
                                   agency=client.agency)  # fmt: skip


async def add_operator(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    agency = await _manager(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not {"agency", "username", "role"} <= set(body) <= {
        "agency",
        "username",
        "role",
        "password",
    }:
        raise AccessDenied(400, 'expected {"agency", "username", "role", "password"?}', "", "body")
    if not all(isinstance(body.get(k, ""), str) for k in ("agency", "username", "role", "password")):
        raise AccessDenied(400, "agency, username, role and password are strings", "", "body")
    if agency is not None and (body["agency"] != agency or body["role"] not in SUPERVISOR_ROLES):
        raise access.deny(request, 403, "supervisors add operators and supervisors of their own agency",
                          agency=agency)  # fmt: skip
    try:
        operator, password = access.add_operator(body["agency"], body["username"], body["role"],
                                                 body.get("password"), operator_of(request))  # fmt: skip
    except OperatorError as exc:
        raise AccessDenied(400, str(exc), "", exc.field) from None
    doc: dict[str, str] = operator.public()
    if "password" not in body:
        doc["password"] = password
    return web.json_response(doc, status=201, headers={"Cache-Control": "no-store"})


async def list_operators(request: web.Request) -> web.Response:
    agency = await _manager(request)
    listed = request.app[ACCESS].operators.list(agency)
    return web.json_response({"operators": [o.public() for o in listed]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/operators", add_operator)
    app.router.add_get("/api/operators", list_operators)
