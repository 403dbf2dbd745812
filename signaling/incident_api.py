"""The incident, token and audit API, the JWKS and the OAuth2 token endpoint.

    POST   /oauth/token                       client credentials -> API bearer token (RFC 6749 4.4)
    GET    /.well-known/jwks.json             public signing keys (next, active, retired-but-live)
    POST   /api/incidents                     201 {"id": "urn:emergency:uid:incidentid:...", ..., "scope"}
    GET    /api/incidents/{id}
    PATCH  /api/incidents/{id}                moving point, until, shared_with (the owner's), photo, summary
    POST   /api/incidents/{id}/close          ends every live view under it
    GET    /api/incidents/{id}/cameras        in scope now, nearest first, with distance_m
    GET    /api/incidents/{id}/photo          the vulnerable person's photo (owner and shared agencies only)
    POST   /api/incidents/{id}/tokens         {"operator"} -> stream token + cameras with whep_url
    DELETE /api/tokens/{jti}                  revoke; ends the token's live views
    GET    /api/audit                         auditors: ?camera=&incident=&agency=&event=&since=&until=&limit=
    GET    /api/audit/verify                  auditors: walk the hash chain

Agency apps authenticate with HTTP Basic (client_id:client_secret) or a bearer token from /oauth/token; wrong
credentials back off per client and per address (signaling/logins.py). A signed-in operator's session cookie
(signaling/session_api.py) acts as the agency's client would, and names the operator in every record.
Only the owner and the agencies an incident is shared with may act on it; closing it, moving it, changing its
window and who it is shared with are the owner's (incidents.py: the window's and a move's bounds). Auditor
clients read the audit log and nothing else. Errors are JSON `{"error": ..., "detail": ..., "field"?: ...}`.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from mediaserver.cluster.worker_client import WorkerClient
from signaling.access import ACCESS, Access, AccessSettings, Denied
from signaling.audit import EVENTS
from signaling.clients import Client
from signaling.errors import QuotaExceeded
from signaling.incidents import OWNER_FIELDS, Incident, ValidationError, parse_create, parse_patch, rfc3339
from signaling.json_body import read_json
from signaling.logins import guarded
from signaling.session_api import signed_in
from signaling.tokens import TokenError

MAX_AUDIT_ROWS = 10_000


def install(
    app: web.Application,
    worker: WorkerClient,
    cameras: Callable[[], Iterable[Any]],
    db: str | Path = ":memory:",
    settings: AccessSettings | None = None,
) -> Access:
    """Create the access layer over `db`, register its routes and tie its sweep to the app's lifetime.
    Call before other on_shutdown handlers are added, so views are ended (and audited) before the worker
    closes its sessions."""
    access = Access(db, worker.close, cameras, settings)
    app[ACCESS] = access
    add_routes(app)

    async def start(app: web.Application) -> None:
        access.start(lambda: {str(s["id"]) for s in worker.sessions})

    async def stop(app: web.Application) -> None:
        await access.stop()

    async def close(app: web.Application) -> None:
        access.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.on_cleanup.append(close)
    return access


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/oauth/token", oauth_token)
    r.add_get("/.well-known/jwks.json", jwks)
    r.add_post("/api/incidents", create_incident)
    r.add_get("/api/incidents/{id}", get_incident)
    r.add_patch("/api/incidents/{id}", patch_incident)
    r.add_post("/api/incidents/{id}/close", close_incident)
    r.add_get("/api/incidents/{id}/cameras", incident_cameras)
    r.add_get("/api/incidents/{id}/photo", incident_photo)
    r.add_post("/api/incidents/{id}/tokens", issue_token)
    r.add_delete("/api/tokens/{jti}", revoke_token)
    r.add_get("/api/audit", audit_query)
    r.add_get("/api/audit/verify", audit_verify)


# -- helpers ---------------------------------------------------------------------------------------------------


def bad_request(field: str, message: str, status: int = 400) -> Denied:
    return Denied(status, message, "", field)


def operator_of(request: web.Request) -> str | None:
    """The signed-in operator; else the person at the agency app, as the app tells us (recorded in the audit,
    not authenticated)."""
    session = signed_in(request)
    if session is not None:
        return session.operator.username
    value = request.headers.get("X-Operator", "").strip()
    return value[:128] or None


async def client_login(request: web.Request, client_id: str, secret: str) -> Client | None:
    """A client's credentials checked behind the lockout (429 while locked); None when wrong."""
    access = request.app[ACCESS]
    remembered = access.clients.remembered(client_id, secret)
    if remembered is not None:
        return remembered

    async def check() -> Client | None:
        return await access.clients.authenticate_async(client_id, secret)

    return await guarded(access, request, f"client:{client_id}", check, client_id=client_id or None)


async def authenticate(request: web.Request) -> Client:
    """HTTP Basic with the client's credentials, a bearer token from /oauth/token, or an operator's session
    (only when no Authorization header is sent: an app's credentials always win over a stray cookie)."""
    access = request.app[ACCESS]
    session = signed_in(request)
    if session is not None:
        return session.operator.as_client()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        client_id, secret = _basic(value)
        client = await client_login(request, client_id, secret)
        if client is None:
            raise access.deny(request, 401, "invalid client credentials", client_id=client_id or None)
        return client
    if scheme.lower() == "bearer" and value.strip():
        try:
            claims = access.tokens.verify(value.strip(), access.settings.tokens.api_audience)
        except TokenError as exc:
            raise access.deny(request, 401, "invalid token", exc.reason) from None
        bearer_client = access.clients.get(str(claims["client_id"]))
        if bearer_client is None:
            raise access.deny(request, 401, "invalid token", "client no longer registered")
        return bearer_client
    raise access.deny(request, 401, "authentication required", "HTTP Basic client credentials or a bearer token")


def _basic(value: str) -> tuple[str, str]:
    try:
        client_id, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return "", ""
    return client_id, secret


async def agency_client(request: web.Request) -> Client:
    client = await authenticate(request)
    if client.role != "agency":  # auditors read the audit log; admins run the server
        raise request.app[ACCESS].deny(
            request, 403, f"{client.role}s cannot act on incidents", client_id=client.client_id, agency=client.agency
        )
    return client


def load_incident(request: web.Request, client: Client, owner_only: str | None = None) -> Incident:
    """The incident in the path, if `client`'s agency may act on it (`owner_only`: the action's name)."""
    access = request.app[ACCESS]
    incident = access.incidents.get(request.match_info["id"])
    if incident is None:
        raise Denied(404, "unknown incident", request.match_info["id"])
    who = {"client_id": client.client_id, "agency": client.agency, "incident": incident.id, "basis": incident.basis}
    if client.agency not in incident.agencies:
        raise access.deny(request, 403, "incident not shared with the agency", client.agency, **who)
    if owner_only and client.agency != incident.owner:
        raise access.deny(request, 403, f"only the owning agency may {owner_only}", incident.owner, **who)
    return incident


def whep_url(request: web.Request, camera_id: str) -> str:
    return f"{request.scheme}://{request.host}/whep/{quote(camera_id, safe='')}"


def camera_list(request: web.Request, hits: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"id": cid, "whep_url": whep_url(request, cid), "distance_m": d} for cid, d in hits]


# -- OAuth and keys --------------------------------------------------------------------------------------------


async def oauth_token(request: web.Request) -> web.Response:
    """Client credentials grant: Basic auth (client_secret_basic) or form fields (client_secret_post)."""
    access = request.app[ACCESS]
    if (request.content_length or 0) > 4096:
        raise Denied(413, "request body too large", "at most 4096 bytes", "body")
    form = await request.post()
    if form.get("grant_type") != "client_credentials":
        return web.json_response({"error": "unsupported_grant_type", "field": "grant_type"}, status=400)
    if "Authorization" not in request.headers and "client_id" in form:
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        client = await client_login(request, client_id, secret)
        if client is None:
            access.deny(request, 401, "invalid client credentials", client_id=client_id or None)  # audited
            return web.json_response({"error": "invalid_client", "error_description": "wrong credentials"}, status=401)
    else:
        try:
            client = await authenticate(request)
            if signed_in(request) is not None and "Authorization" not in request.headers:
                raise Denied(401, "client credentials required")  # a console session gets no API token
        except QuotaExceeded:
            raise
        except Denied:
            return web.json_response({"error": "invalid_client", "error_description": "wrong credentials"}, status=401)
    token, claims = access.issue_api_token(client, request.remote)
    return web.json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": claims["exp"] - claims["iat"],
         "scope": claims["scope"]},
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[ACCESS].keys.jwks(), headers={"Cache-Control": "max-age=60"})


# -- incidents ---------------------------------------------------------------------------------------------------


async def create_incident(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    client = await agency_client(request)
    body = await read_json(request)
    try:
        spec = parse_create(body, max_window_s=access.incidents.max_window_s)
    except ValidationError as exc:
        raise bad_request(exc.field, exc.message) from None
    await access.incidents.prepare(spec)  # a large geometry's scope, off the event loop
    incident = access.create_incident(spec, client, operator_of(request), request.remote)
    doc = incident_doc(access, incident)
    return web.json_response(doc, status=201, headers={"Location": f"/api/incidents/{incident.id}"})


def incident_doc(access: Access, incident: Incident) -> dict[str, Any]:
    hits = access.incidents.cameras(incident)
    nearest = hits[0][1] if hits else None
    return {**incident.public(), "scope": {"cameras": len(hits), "nearest_m": nearest}}


async def get_incident(request: web.Request) -> web.Response:
    client = await agency_client(request)
    return web.json_response(incident_doc(request.app[ACCESS], load_incident(request, client)))


async def patch_incident(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    client = await agency_client(request)
    body = await read_json(request)
    owners = [OWNER_ACTIONS[f] for f in OWNER_FIELDS if isinstance(body, dict) and f in body]
    incident = load_incident(request, client, " and ".join(owners) or None)
    if not incident.is_open():
        raise Denied(409, "incident closed", incident.closed_reason or "")
    try:
        changes = parse_patch(body, incident, max_window_s=access.incidents.max_window_s)
    except ValidationError as exc:
        raise bad_request(exc.field, exc.message) from None
    updated = access.update_incident(incident, changes, client, operator_of(request), request.remote)
    await access.sweep()  # a moved point or a shorter share list takes views away now, not at the next tick
    return web.json_response(incident_doc(access, updated))


OWNER_ACTIONS = {"geometry": "move it", "until": "change its window", "shared_with": "change who it is shared with"}


async def close_incident(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    client = await agency_client(request)
    incident = load_incident(request, client, "close it")
    if incident.status != "active":
        raise Denied(409, "incident closed", incident.closed_reason or "")
    ended = await access.close_incident(incident, client, "closed", operator_of(request), request.remote)
    closed = access.incidents.get(incident.id)
    assert closed is not None
    return web.json_response({**incident_doc(access, closed), "views_ended": ended})


async def incident_cameras(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    incident = load_incident(request, await agency_client(request))
    hits = access.incidents.cameras(incident) if incident.is_open() else []
    doc = {"incident": incident.id, "open": incident.is_open(), "cameras": camera_list(request, hits)}
    return web.json_response(doc)


async def incident_photo(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    incident = load_incident(request, await agency_client(request))
    photo = access.incidents.photo(incident.id)
    if photo is None:
        raise Denied(404, "no photo", incident.id)
    return web.Response(body=photo[1], content_type=photo[0], headers={"Cache-Control": "no-store"})


# -- tokens ------------------------------------------------------------------------------------------------------


async def issue_token(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    client = await agency_client(request)
    body = await read_json(request)
    incident = load_incident(request, client)
    if not incident.is_open():
        raise access.deny(request, 403, "incident closed", incident.closed_reason or "window ended",
                          client_id=client.client_id, agency=client.agency, incident=incident.id)  # fmt: skip
    if not isinstance(body, dict) or set(body) - {"operator", "ttl_s", "single_use"}:
        raise bad_request("body", 'expected {"operator": "...", "ttl_s"?: seconds, "single_use"?: true}')
    single_use = body.get("single_use", False)
    if not isinstance(single_use, bool):
        raise bad_request("single_use", "true (the token opens one view only) or false")
    session = signed_in(request)
    operator = session.operator.username if session else body.get("operator")  # an operator's token is theirs
    if not isinstance(operator, str) or not 0 < len(operator.strip()) <= 128:
        raise bad_request("operator", "required: who will watch (1-128 characters)")
    ttl = body.get("ttl_s")
    max_ttl = access.settings.tokens.max_ttl_s
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 10 <= ttl <= max_ttl):
        raise bad_request("ttl_s", f"an integer between 10 and {max_ttl}")
    token, claims, hits = access.issue_stream_token(incident, client, operator.strip(), ttl, request.remote, single_use)
    return web.json_response(
        {"token": token, "token_type": "Bearer", "jti": claims["jti"], "expires_at": rfc3339(claims["exp"]),
         "incident": incident.id, "cameras": camera_list(request, hits)},
        status=201, headers={"Cache-Control": "no-store"},
    )  # fmt: skip


async def revoke_token(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    client = await agency_client(request)
    jti = request.match_info["jti"]
    record = access.tokens.get(jti)
    if record is None:
        raise Denied(404, "unknown token", jti)
    incident = access.incidents.get(record.incident_id) if record.incident_id else None
    if record.client_id != client.client_id and (incident is None or incident.owner != client.agency):
        raise access.deny(request, 403, "not your token", "only its client or the incident's owner may revoke it",
                          client_id=client.client_id, agency=client.agency, jti=jti)  # fmt: skip
    ended = await access.revoke_token(jti, client, request.remote, operator_of(request))
    return web.json_response({"jti": jti, "revoked": True, "views_ended": ended})


# -- audit -------------------------------------------------------------------------------------------------------


async def auditor(request: web.Request) -> Client:
    client = await authenticate(request)
    if not client.is_auditor:
        raise request.app[ACCESS].deny(request, 403, "auditors only", client_id=client.client_id, agency=client.agency)
    return client


def _time(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(name, "an RFC 3339 time with a timezone") from None
    if when.tzinfo is None:
        raise bad_request(name, "an RFC 3339 time with a timezone")
    return when.timestamp()


async def audit_query(request: web.Request) -> web.Response:
    await auditor(request)
    q = request.query
    event = q.get("event")
    if event is not None and event not in EVENTS:
        raise bad_request("event", f"one of {', '.join(EVENTS)}")
    try:
        limit = int(q.get("limit", "1000"))
    except ValueError:
        raise bad_request("limit", "an integer") from None
    if not 1 <= limit <= MAX_AUDIT_ROWS:
        raise bad_request("limit", f"between 1 and {MAX_AUDIT_ROWS}")
    records = request.app[ACCESS].audit.query(
        camera=q.get("camera"), incident=q.get("incident"), agency=q.get("agency"), event=event,
        since=_time(request, "since"), until=_time(request, "until"), limit=limit,
    )  # fmt: skip
    return web.json_response({"records": records, "count": len(records), "at": rfc3339(time.time())})


async def audit_verify(request: web.Request) -> web.Response:
    await auditor(request)
    result = await request.app[ACCESS].audit.verify_async()  # a thread: the walk never blocks the loop
    return web.json_response(
        {"ok": result.ok, "records": result.records, "bad_seq": result.bad_seq, "problem": result.problem}
    )
