"""WHEP (draft-ietf-wish-whep) endpoints: POST an offer, PATCH trickle ICE, DELETE the session.

    POST   /whep/{camera_id}[?profile=P]   application/sdp offer -> 201 answer, Location, ETag
    PATCH  /whep/{camera_id}/{session_id}  application/trickle-ice-sdpfrag -> 204
    DELETE /whep/{camera_id}/{session_id}  -> 200

Every request needs `Authorization: Bearer <stream token>` (signaling/access.py decides and audits: 401 for
a bad token, 403 for a closed or unshared incident or a camera outside its scope now); PATCH and DELETE
only with the token that opened the session. Errors are JSON `{"error": ..., "detail": ...}` with the
status a WHEP client expects.

`profile` (mediaserver/transcode.py) is `main` (default: the camera as it is, H.264 passed through; an
H.265 camera transcoded) or `low` (<= 640x360, ~400 kbit/s, for grids; the camera's sub-stream when the
worker has it); any other value is 400. A worker that would degrade its current viewers by taking one more
answers 503 with `Retry-After` and `{"error": "overloaded", "detail": <the limit crossed>,
"retry_after_s": N, "load": {...}}` (mediaserver/admission.py); the viewers it has are not affected.
A worker's session error is answered with its class's status (mediaserver/errors.py: 404 unknown camera or
session, 400 bad offer or fragment (also: more ICE candidates than a session may have), 422 unsupported, 503
worker unavailable or overloaded); anything else is a server bug: logged with its stack, 500.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mediaserver.cluster.worker_client import WorkerClient
from mediaserver.errors import BadOffer, SessionError, http_answer
from mediaserver.transcode import PROFILES
from signaling import snapshot_api
from signaling.access import ACCESS
from signaling.edge import bearer, caller
from signaling.json_body import read_body as read_whole

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # an SDP offer is a few KiB
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
WORKER: web.AppKey[WorkerClient] = web.AppKey("worker")


def error(status: int, message: str, detail: str = "") -> web.Response:
    return web.json_response({"error": message, "detail": detail}, status=status)


def session_error(exc: SessionError, title: str | None = None) -> web.Response:
    """A worker's session error as JSON, with its class's status (mediaserver/errors.py)."""
    status, body, headers = http_answer(exc, title)
    return web.json_response(body, status=status, headers=headers)


def server_bug(what: str) -> web.Response:
    """500: a bug, not the request's fault; the stack is logged (call it inside the except block)."""
    log.exception("%s failed", what)
    return error(500, "server error", f"{what} failed; the server's log has the details")


async def read_body(request: web.Request, content_type: str) -> str:
    """The request body as text, or an HTTP error (415 wrong type, 413 too large)."""
    if request.content_type != content_type:
        raise web.HTTPUnsupportedMediaType(
            text=f'{{"error": "unsupported media type", "detail": "expected Content-Type: {content_type}"}}',
            content_type="application/json",
        )
    if (request.content_length or 0) > MAX_BODY:
        raise _too_large()
    body = await read_whole(request, MAX_BODY)  # to its end, however TCP splits it (read(n) is what has come)
    if len(body) > MAX_BODY:
        raise _too_large()
    return body.decode("utf-8", errors="replace")


def _too_large() -> web.HTTPException:
    return web.HTTPRequestEntityTooLarge(
        max_size=MAX_BODY,
        actual_size=MAX_BODY + 1,
        text=f'{{"error": "request body too large", "detail": "at most {MAX_BODY} bytes"}}',
        content_type="application/json",
    )


def etag(session_id: str) -> str:
    return f'"{session_id}"'


async def post_offer(request: web.Request) -> web.StreamResponse:
    camera_id = request.match_info["camera_id"]
    worker, access = request.app[WORKER], request.app[ACCESS]
    who = caller(request)
    grant = access.verify_stream(bearer(request), who, camera_id)  # raises 401/403 (audited)
    access.check_scope(who, grant, camera_id)  # in the incident's scope now, or 403 (audited), known or not
    if not worker.has_camera(camera_id):
        return error(404, "unknown camera", camera_id)
    profile = request.query.get("profile", "main")
    if profile not in PROFILES:
        return error(400, "unknown profile", f"{profile!r}; one of: {', '.join(PROFILES)}")
    sdp = await read_body(request, SDP)
    with access.reserve_view(who, grant, camera_id):  # per-token/per-client caps: 429 + Retry-After (audited)
        try:
            session_id, answer = await worker.offer(camera_id, sdp, profile)
        except SessionError as exc:
            return session_error(exc)
        except Exception:
            return server_bug(f"answering an offer for {camera_id}")
        access.view_started(who, grant, camera_id, session_id)
    location = f"/whep/{camera_id}/{session_id}"
    headers = {"Location": location, "ETag": etag(session_id), "Accept-Patch": SDPFRAG}
    return web.Response(status=201, text=answer, content_type=SDP, headers=headers)


async def patch_session(request: web.Request) -> web.StreamResponse:
    camera_id, session_id = request.match_info["camera_id"], request.match_info["session_id"]
    access = request.app[ACCESS]
    who = caller(request)
    grant = access.verify_stream(bearer(request), who, camera_id)
    access.check_scope(who, grant, camera_id)
    access.check_session(who, grant, camera_id, session_id)
    fragment = await read_body(request, SDPFRAG)
    if request.headers.get("If-Match", "*") not in ("*", etag(session_id)):
        return error(412, "precondition failed", "If-Match does not match the session's ETag")
    try:
        await request.app[WORKER].patch(session_id, fragment)
    except SessionError as exc:
        return session_error(exc, "bad fragment" if isinstance(exc, BadOffer) else None)
    except Exception:
        return server_bug(f"trickle ICE for session {session_id}")
    return web.Response(status=204)


async def delete_session(request: web.Request) -> web.StreamResponse:
    camera_id, session_id = request.match_info["camera_id"], request.match_info["session_id"]
    access = request.app[ACCESS]
    who = caller(request)
    grant = access.verify_stream(bearer(request), who, camera_id)  # ending a view needs no scope, only its own token
    access.check_session(who, grant, camera_id, session_id)
    try:
        await request.app[WORKER].close(session_id)
    except SessionError as exc:
        return session_error(exc)
    await access.view_ended(session_id, "viewer ended")
    return web.Response(status=200)


async def options_endpoint(request: web.Request) -> web.StreamResponse:
    """A plain OPTIONS (not a CORS preflight): what the endpoint accepts."""
    return web.Response(status=204, headers={"Accept-Post": SDP, "Allow": "POST, OPTIONS"})


def add_routes(app: web.Application, worker: WorkerClient) -> None:
    app[WORKER] = worker
    app.router.add_post("/whep/{camera_id}", post_offer)
    app.router.add_route("OPTIONS", "/whep/{camera_id}", options_endpoint)
    app.router.add_patch("/whep/{camera_id}/{session_id}", patch_session)
    app.router.add_delete("/whep/{camera_id}/{session_id}", delete_session)
    snapshot_api.add_routes(app, worker)  # authorised like a view, served by the same worker
