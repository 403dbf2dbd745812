"""The internal RPC of a worker process: what the front asks of it, over HTTP on 127.0.0.1.

    POST /offer {camera_id, sdp, profile} -> {session_id, answer}
    POST /snapshot {camera_id, width} -> image/jpeg          POST /patch {session_id, fragment}
    POST /close {session_id}    POST /close_all              GET  /state?cursor=C -> deltas (see StateFeed)
    POST /cameras {put, remove} (ids: the registry's rows are read here, credentials never travel)
    GET  /status/{camera_id}    GET  /sample?camera=ID...    (metrics.sample_worker)

Not for clients: the worker binds 127.0.0.1 only and every request must carry the per-boot secret the
supervisor gave it (`SECRET_HEADER`), so another local user or a browser page (DNS rebinding, CSRF against
localhost) can't drive it. A session error is answered 409 `errors.to_wire(exc)` (`{"error": kind, "detail":
text, ...}`, kinds from mediaserver/errors.py's one table); any other exception is a bug: logged here with its
stack and answered 500 `{"error": "internal"}`.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from mediaserver.errors import ServerError, SessionError, to_wire
from mediaserver.metrics import sample_worker
from mediaserver.registry import Camera
from mediaserver.worker import Worker

SECRET_HEADER = "X-Goldentime-Worker-Secret"
SECRET_ENV = "GOLDENTIME_WORKER_SECRET"
MAX_CAMERAS_PER_SAMPLE = 100
log = logging.getLogger(__name__)
WORKER: web.AppKey[Worker] = web.AppKey("rpc_worker")
NAME: web.AppKey[str] = web.AppKey("rpc_name")
LOOKUP: web.AppKey[CameraLookup | None] = web.AppKey("rpc_lookup")
FEED: web.AppKey[StateFeed] = web.AppKey("rpc_feed")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CameraLookup = Callable[[Iterable[str]], dict[str, Camera]]  # registry.Registry.get_many


class StateFeed:
    """The worker's camera states and sessions as deltas, so the front's cache costs per change, not per
    camera: each answer carries a cursor; asked with the cursor of the previous answer, the next one holds only
    what changed since (cameras whose state changed or that are gone, sessions that began or ended). Asked
    with any other cursor (the front's first poll, a lost answer, this worker restarted) it holds everything,
    with `full: true`. One reader (the front) is assumed; another reader only costs both a full answer."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._boot = secrets.token_hex(6)  # a restarted worker never accepts an old cursor
        self._serial = 0
        self._cameras: dict[str, tuple[str, str, bool]] = {}
        self._sessions: dict[str, dict[str, Any]] = {}

    @property
    def cursor(self) -> str:
        return f"{self._boot}.{self._serial}"

    def offered(self, session_id: str, camera_id: str) -> None:
        """The front learns a new session from the offer's answer: if it ends before the next poll, that poll
        must say so, so it counts as already sent."""
        self._sessions[session_id] = {"id": session_id, "camera_id": camera_id}

    def poll(self, cursor: str | None) -> dict[str, Any]:
        cameras = self._worker.states()
        sessions = {str(s["id"]): {k: s.get(k) for k in ("id", "camera_id", "profile")}
                    for s in self._worker.egress.sessions}  # fmt: skip
        if cursor == self.cursor:
            body: dict[str, Any] = {
                "full": False,
                "cameras": {cid: st for cid, st in cameras.items() if self._cameras.get(cid) != st},
                "gone": [cid for cid in self._cameras if cid not in cameras],
                "sessions": [s for sid, s in sessions.items() if sid not in self._sessions],
                "ended": [sid for sid in self._sessions if sid not in sessions],
            }
        else:
            body = {"full": True, "cameras": cameras, "gone": [], "sessions": list(sessions.values()), "ended": []}
        self._cameras, self._sessions = cameras, sessions
        self._serial += 1
        body["cursor"] = self.cursor
        return body


def _secret_middleware(secret: str) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), secret.encode()):
            return web.json_response({"error": "forbidden", "detail": "internal worker RPC"}, status=403)
        try:
            return await handler(request)
        except SessionError as exc:
            return web.json_response(to_wire(exc), status=409)
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("worker RPC %s failed", request.path)
            return web.json_response(to_wire(ServerError(f"{type(exc).__name__} (the worker's log has the stack)")),
                                     status=500)  # fmt: skip

    return check


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except json.JSONDecodeError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


async def offer(request: web.Request) -> web.Response:
    body = await _body(request)
    profile = body.get("profile")
    egress = request.app[WORKER].egress
    session_id, answer = await egress.offer(str(body["camera_id"]), str(body["sdp"]), profile and str(profile))
    request.app[FEED].offered(session_id, str(body["camera_id"]))
    return web.json_response({"session_id": session_id, "answer": answer})


async def snapshot(request: web.Request) -> web.Response:
    body = await _body(request)
    width = body.get("width")
    jpeg = await request.app[WORKER].egress.snapshot(str(body["camera_id"]), int(width) if width else None)
    return web.Response(body=jpeg, content_type="image/jpeg")


async def patch(request: web.Request) -> web.Response:
    body = await _body(request)
    await request.app[WORKER].egress.patch(str(body["session_id"]), str(body["fragment"]))
    return web.json_response({})


async def close(request: web.Request) -> web.Response:
    body = await _body(request)
    await request.app[WORKER].egress.close(str(body["session_id"]))
    return web.json_response({})


async def close_all(request: web.Request) -> web.Response:
    await request.app[WORKER].egress.close_all()
    return web.json_response({})


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[FEED].poll(request.query.get("cursor")))


async def cameras(request: web.Request) -> web.Response:
    """Registry deltas from the front: `put` ids this worker now serves (new, or changed in the registry: a
    changed URL or credentials restarts that camera's ingest), `remove` ids it no longer serves. Idempotent."""
    body = await _body(request)
    worker = request.app[WORKER]
    put, remove = [str(c) for c in body.get("put", [])], [str(c) for c in body.get("remove", [])]
    lookup = request.app[LOOKUP]
    if put and lookup is None:
        return web.json_response({"error": "unsupported", "detail": "this worker has no registry"}, status=409)
    found = lookup(put) if lookup is not None else {}
    outcomes: Counter[str] = Counter()
    for camera_id in put:
        camera = found.get(camera_id)
        if camera is None:  # removed from the registry since the front looked
            remove.append(camera_id)
            continue
        outcomes[await worker.put_camera(camera)] += 1
    for camera_id in remove:
        if camera_id in worker.ingests:
            await worker.remove_camera(camera_id)
            outcomes["removed"] += 1
    return web.json_response({**outcomes, "cameras": len(worker.ingests)})


async def status(request: web.Request) -> web.Response:
    found = request.app[WORKER].status(request.match_info["camera_id"])
    if found is None:
        return web.json_response({"error": "unknown_camera", "detail": request.match_info["camera_id"]}, status=404)
    return web.json_response(found)


async def sample(request: web.Request) -> web.Response:
    cameras = request.query.getall("camera", [])[:MAX_CAMERAS_PER_SAMPLE]
    return web.json_response(sample_worker(request.app[WORKER], request.app[NAME], cameras))


def create_rpc_app(worker: Worker, secret: str, name: str, lookup: CameraLookup | None = None) -> web.Application:
    """`lookup` reads cameras from the registry by id (None: this worker takes no registry deltas)."""
    app = web.Application(middlewares=[_secret_middleware(secret)], client_max_size=1024 * 1024)
    app[WORKER], app[NAME], app[FEED] = worker, name, StateFeed(worker)
    app[LOOKUP] = lookup
    app.router.add_post("/offer", offer)
    app.router.add_post("/snapshot", snapshot)
    app.router.add_post("/patch", patch)
    app.router.add_post("/close", close)
    app.router.add_post("/close_all", close_all)
    app.router.add_get("/state", state)
    app.router.add_post("/cameras", cameras)
    app.router.add_get("/status/{camera_id}", status)
    app.router.add_get("/sample", sample)
    return app
