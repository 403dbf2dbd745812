"""JPEG snapshots, authorised like a view:

    GET /api/cameras/{camera_id}/snapshot[?width=W]   -> 200 image/jpeg

The newest picture of the camera, decoded from the worker's GOP cache (no extra camera session) and cached
for about a second per camera and width (mediaserver/snapshot.py). `width` (16..3840) scales it down,
aspect kept; never up. Needs `Authorization: Bearer <stream token>` whose incident has the camera in its
scope now, exactly as WHEP (401/403, audited as denials: 403 before 404, so a token cannot probe which ids
exist); every snapshot served is audited as `view.snapshot`. 404 for an unknown camera in scope (registered,
not on a worker), 503 + Retry-After while it has no picture yet. The width is rounded up to one of a few fixed
widths (mediaserver/snapshot.py): distinct widths cannot defeat the cache.
"""

from __future__ import annotations

from aiohttp import web

from mediaserver.cluster.worker_client import WorkerClient
from mediaserver.errors import SessionError, http_answer
from mediaserver.snapshot import MAX_WIDTH, MIN_WIDTH
from signaling.access import ACCESS
from signaling.edge import bearer, caller

CACHE_CONTROL = "private, max-age=1"  # the server caches 1 s too; private: it is personal data


def _width(request: web.Request) -> int | None:
    raw = request.query.get("width")
    if raw is None:
        return None
    if not raw.isdigit() or not MIN_WIDTH <= int(raw) <= MAX_WIDTH:
        raise web.HTTPBadRequest(
            text=f'{{"error": "bad width", "detail": "an integer {MIN_WIDTH}..{MAX_WIDTH}"}}',
            content_type="application/json",
        )
    return int(raw)


def _error(status: int, message: str, detail: str, **headers: str) -> web.Response:
    return web.json_response({"error": message, "detail": detail}, status=status, headers=headers or None)


def add_routes(app: web.Application, worker: WorkerClient) -> None:
    async def snapshot(request: web.Request) -> web.StreamResponse:
        camera_id = request.match_info["camera_id"]
        access = request.app[ACCESS]
        who = caller(request)
        grant = access.verify_stream(bearer(request), who, camera_id)  # 401/403, audited
        access.check_scope(who, grant, camera_id)  # before any 404: out of scope is 403, known or not
        if not worker.has_camera(camera_id):
            return _error(404, "unknown camera", camera_id)
        width = _width(request)
        try:
            jpeg = await worker.snapshot(camera_id, width)
        except SessionError as exc:  # 404 unknown camera, 503 + Retry-After: no picture yet
            status, body, headers = http_answer(exc)
            return web.json_response(body, status=status, headers=headers)
        access.snapshot_viewed(who, grant, camera_id, width)
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": CACHE_CONTROL})

    app.router.add_get("/api/cameras/{camera_id}/snapshot", snapshot)
