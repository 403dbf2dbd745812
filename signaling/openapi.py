"""The public HTTP API as an OpenAPI 3.1 document, served at GET /api/openapi.json.

Written by hand beside the handlers (their module docstrings are the prose), built once per process.
tests/test_openapi.py compares it with the aiohttp router both ways: every route is documented and nothing
documented is missing, so a new route without its description fails the tests. The console's static files
(`/`, `/web/...`) are pages, not API, and are left out.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

VERSION = "1"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


ERROR = _json(_ref("Error"), "refused: JSON error")
STD_ERRORS = {"401": ERROR, "403": ERROR, "429": ERROR}
APP: list[dict[str, list[str]]] = [
    {"basic": []},
    {"apiToken": []},
    {"session": []},
]  # an agency app, or a signed-in operator
STREAM: list[dict[str, list[str]]] = [{"streamToken": []}]
PATH_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "incident URN"}
CAMERA = {"name": "camera_id", "in": "path", "required": True, "schema": {"type": "string"}}
SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
CSRF = {"name": "X-CSRF-Token", "in": "header", "required": False, "schema": {"type": "string"},
        "description": "required with the session cookie on state-changing calls (GET /api/session)"}  # fmt: skip
OPERATOR = {"name": "X-Operator", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 128},
            "description": "agency apps: the person at the app (ignored for a signed-in operator)"}  # fmt: skip


def _op(
    tag: str, summary: str, responses: dict[str, Any], security: list[Any] | None = None,
    params: list[Any] | None = None, body: dict[str, Any] | None = None, body_type: str = JSON,
) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"tags": [tag], "summary": summary, "responses": responses}
    op["security"] = security if security is not None else []
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {body_type: {"schema": body}}}
    return op


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names]


def _paths() -> dict[str, dict[str, Any]]:
    sdp = {"type": "string", "description": "SDP"}
    answer = {"description": "SDP answer; Location names the session",
              "content": {"application/sdp": {"schema": sdp}}}  # fmt: skip
    changing = [CSRF, OPERATOR]
    return {
        "/oauth/token": {"post": _op("tokens", "client credentials -> API bearer token (RFC 6749 4.4)",
            {"200": _json(_ref("ApiToken")), "400": ERROR, "401": ERROR, "429": ERROR}, [{"basic": []}, {}],
            body={"type": "object", "properties": {"grant_type": {"const": "client_credentials"},
                  "client_id": {"type": "string"}, "client_secret": {"type": "string"}}},
            body_type="application/x-www-form-urlencoded")},
        "/.well-known/jwks.json": {"get": _op("tokens", "public signing keys (JWKS)",
            {"200": _json({"type": "object"})})},
        "/api/session": {
            "post": _op("session", "operator sign-in: sets the gt_session cookie (HttpOnly, SameSite=Strict)",
                {"201": _json(_ref("Session")), "400": ERROR, "401": ERROR, "403": ERROR, "429": ERROR},
                body=_ref("SignIn")),
            "get": _op("session", "whoami: operator, agency, role, CSRF token", {"200": _json(_ref("Session")),
                "401": ERROR}, [{"session": []}]),
            "delete": _op("session", "sign out", {"200": _json({"type": "object"}), **STD_ERRORS}, [{"session": []}],
                [CSRF]),
        },
        "/api/operators": {
            "post": _op("operators", "add an operator account (city admins; supervisors for their agency)",
                {"201": _json(_ref("Operator")), "400": ERROR, **STD_ERRORS}, APP, changing, _ref("OperatorCreate")),
            "get": _op("operators", "accounts the caller may manage",
                {"200": _json({"type": "object", "properties": {"operators": {"type": "array",
                 "items": _ref("Operator")}}}), **STD_ERRORS}, APP),
        },
        "/api/incidents": {"post": _op("incidents", "open an incident", {"201": _json(_ref("Incident")),
            "400": ERROR, "413": ERROR, **STD_ERRORS}, APP, changing, _ref("IncidentCreate"))},
        "/api/incidents/{id}": {
            "get": _op("incidents", "an incident", {"200": _json(_ref("Incident")), "404": ERROR, **STD_ERRORS}, APP,
                [PATH_ID]),
            "patch": _op("incidents", "move, extend, re-share (owner), photo, summary",
                {"200": _json(_ref("Incident")), "400": ERROR, "404": ERROR, "409": ERROR, **STD_ERRORS}, APP,
                [PATH_ID, *changing], {"type": "object"}),
        },
        "/api/incidents/{id}/close": {"post": _op("incidents", "close it: ends every live view under it",
            {"200": _json(_ref("Incident")), "404": ERROR, "409": ERROR, **STD_ERRORS}, APP, [PATH_ID, *changing])},
        "/api/incidents/{id}/cameras": {"get": _op("incidents", "cameras in scope now, nearest first",
            {"200": _json({"type": "object"}), "404": ERROR, **STD_ERRORS}, APP, [PATH_ID])},
        "/api/incidents/{id}/photo": {"get": _op("incidents", "the vulnerable person's photo (owner, shared)",
            {"200": {"description": "image", "content": {"image/*": {}}}, "404": ERROR, **STD_ERRORS}, APP,
            [PATH_ID])},
        "/api/incidents/{id}/tokens": {"post": _op("tokens",
            "a stream token for one operator (a signed-in operator's own name is used)",
            {"201": _json(_ref("StreamToken")), "400": ERROR, "404": ERROR, **STD_ERRORS}, APP, [PATH_ID, *changing],
            {"type": "object", "properties": {"operator": {"type": "string"}, "ttl_s": {"type": "integer"},
             "single_use": {"type": "boolean"}}})},
        "/api/tokens/{jti}": {"delete": _op("tokens", "revoke a token; ends its live views",
            {"200": _json({"type": "object"}), "404": ERROR, **STD_ERRORS}, APP,
            [{"name": "jti", "in": "path", "required": True, "schema": {"type": "string"}}, *changing])},
        "/api/audit": {"get": _op("audit", "audit records (auditors)", {"200": _json({"type": "object",
            "properties": {"records": {"type": "array", "items": _ref("AuditRecord")}, "count": {"type": "integer"},
            "at": {"type": "string"}}}), "400": ERROR, **STD_ERRORS}, APP,
            _query("camera", "incident", "agency", "event", "since", "until", "limit"))},
        "/api/audit/verify": {"get": _op("audit", "walk the hash chain (auditors)", {"200": _json(_ref("Verification")),
            **STD_ERRORS}, APP)},
        "/api/cameras": {"get": _op("cameras", "cameras the caller may see (token: its incident's, nearest first)",
            {"200": _json({"type": "array", "items": _ref("Camera")}), **STD_ERRORS}, [*STREAM, *APP])},
        "/api/cameras/{camera_id}/status": {"get": _op("ops", "a camera's ingest state and error counters",
            {"200": _json({"type": "object"}), **STD_ERRORS}, [*APP, {}], [CAMERA])},
        "/api/cameras/{camera_id}/snapshot": {"get": _op("cameras", "JPEG of the newest frame (audited as a view)",
            {"200": {"description": "JPEG", "content": {"image/jpeg": {}}}, "404": ERROR, "503": ERROR,
             **STD_ERRORS}, STREAM, [CAMERA, *_query("width")])},
        "/whep/{camera_id}": {
            "post": _op("whep", "WHEP offer (RFC 9725); ?profile=main|low", {"201": answer, "400": ERROR,
                "404": ERROR, "503": ERROR, **STD_ERRORS}, STREAM, [CAMERA, *_query("profile")], sdp,
                "application/sdp"),
            "options": _op("whep", "what the endpoint accepts (and CORS preflight)", {"204": {"description": "Allow"}},
                params=[CAMERA]),
        },
        "/whep/{camera_id}/{session_id}": {
            "patch": _op("whep", "trickle ICE", {"204": {"description": "applied"}, **STD_ERRORS}, STREAM,
                [CAMERA, SESSION_ID], sdp, "application/trickle-ice-sdpfrag"),
            "delete": _op("whep", "end the session", {"200": {"description": "ended"}, **STD_ERRORS}, STREAM,
                [CAMERA, SESSION_ID]),
        },
        "/healthz": {"get": _op("ops", "liveness", {"200": _json({"type": "object"})})},
        "/readyz": {"get": _op("ops", "readiness (workers up)", {"200": _json({"type": "object"}), "503": ERROR})},
        "/metrics": {"get": _op("ops", "Prometheus metrics (scrape allow-list)", {"200": {"description": "text",
            "content": {"text/plain": {}}}, "403": ERROR})},
        "/ops/workers": {
            "get": _op("ops", "media workers (scrape allow-list)", {"200": _json({"type": "object"}), "403": ERROR}),
            "post": _op("ops", "resize the workers (admins)", {"202": _json({"type": "object"}), "400": ERROR,
                **STD_ERRORS}, APP, [CSRF], {"type": "object", "properties": {"count": {"type": "integer"}}}),
        },
        "/api/openapi.json": {"get": _op("meta", "this document", {"200": _json({"type": "object"})})},
    }  # fmt: skip


def _schemas() -> dict[str, Any]:
    s, i, o = {"type": "string"}, {"type": "integer"}, {"type": "object"}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": s, "detail": s, "field": s,
                  "retry_after_s": {"type": "number"}}},
        "SignIn": {"type": "object", "required": ["username", "password"], "additionalProperties": False,
                   "properties": {"username": s, "password": {"type": "string", "format": "password"}}},
        "Session": {"type": "object", "properties": {"operator": s, "operator_id": s, "username": s, "agency": s,
                    "role": {"enum": ["operator", "supervisor", "auditor", "city-admin"]}, "csrf_token": s,
                    "expires_at": {"type": "string", "format": "date-time"}, "idle_timeout_s": {"type": "number"}}},
        "Operator": {"type": "object", "properties": {"operator_id": s, "agency": s, "username": s, "role": s,
                     "password": {"type": "string", "description": "one-time, only when generated"}}},
        "OperatorCreate": {"type": "object", "required": ["agency", "username", "role"], "properties": {
                           "agency": s, "username": s, "role": s, "password": s}},
        "IncidentCreate": {"type": "object", "required": ["service", "basis", "until", "geometry"], "properties": {
                           "service": s, "basis": s, "until": {"type": "string", "format": "date-time"},
                           "geometry": o, "radius_m": {"type": "number"}, "nearest": i,
                           "shared_with": {"type": "array", "items": s}}},
        "Incident": {"type": "object", "properties": {"id": s, "service": s, "owner": s, "status": s, "scope": o}},
        "ApiToken": {"type": "object", "properties": {"access_token": s, "token_type": s, "expires_in": i,
                     "scope": s}},
        "StreamToken": {"type": "object", "properties": {"token": s, "token_type": s, "jti": s, "expires_at": s,
                        "incident": s, "cameras": {"type": "array", "items": o}}},
        "Camera": {"type": "object", "properties": {"id": s, "name": s, "district": s, "lat": {"type": "number"},
                   "lon": {"type": "number"}, "codec": s, "state": s, "distance_m": {"type": "number"}}},
        "AuditRecord": {"type": "object", "properties": {"seq": i, "ts": s, "event": s, "operator": s, "agency": s,
                        "client_id": s, "camera": s, "incident": s, "hash": s}},
        "Verification": {"type": "object", "properties": {"ok": {"type": "boolean"}, "records": i, "bad_seq": i,
                         "problem": s}},
    }  # fmt: skip


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Goldentime", "version": VERSION,
                 "description": "CCTV for emergency agencies: incidents open cameras; every view is audited."},
        "paths": _paths(),
        "components": {"schemas": _schemas(), "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic", "description": "agency client id and secret"},
            "apiToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "from /oauth/token"},
            "streamToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                            "description": "from POST /api/incidents/{id}/tokens"},
            "session": {"type": "apiKey", "in": "cookie", "name": "gt_session",
                        "description": "operator sign-in (`__Host-gt_session` over TLS); state-changing calls "
                        "also need X-CSRF-Token"},
        }},
    }  # fmt: skip


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document(), headers={"Cache-Control": "max-age=300"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", serve)
