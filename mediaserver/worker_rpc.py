"""The internal RPC of a worker process: what the front asks of it, over HTTP on 127.0.0.1.

    POST /offer {camera_id, sdp, profile} -> {session_id, answer}
    POST /snapshot {camera_id, width} -> image/jpeg          POST /patch {session_id, fragment}
    POST /close {session_id}    POST /close_all              GET  /state -> {sessions, cameras}
    GET  /status/{camera_id}    GET  /sample?camera=ID...    (metrics.sample_worker)

Not for clients: the worker binds 127.0.0.1 only and every request must carry the per-boot secret the
supervisor gave it (`SECRET_HEADER`), so another local user or a browser page (DNS rebinding, CSRF against
localhost) can't drive it. Errors are `{"error": kind, "detail": text}` with a kind from `ERROR_KINDS`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mediaserver import egress as eg
from mediaserver.metrics import sample_worker
from mediaserver.worker import Worker

SECRET_HEADER = "X-Goldentime-Worker-Secret"
SECRET_ENV = "GOLDENTIME_WORKER_SECRET"
MAX_CAMERAS_PER_SAMPLE = 100

# egress error -> the kind sent to the front (signaling/worker_client.py maps kinds back to its own errors)
ERROR_KINDS: list[tuple[type[eg.EgressError], str]] = [
    (eg.UnknownCamera, "unknown_camera"),
    (eg.UnknownSession, "unknown_session"),
    (eg.BadOffer, "bad_offer"),
    (eg.Unsupported, "unsupported"),
    (eg.Overloaded, "overloaded"),
    (eg.NotYet, "not_yet"),
]
WORKER: web.AppKey[Worker] = web.AppKey("rpc_worker")
NAME: web.AppKey[str] = web.AppKey("rpc_name")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_kind(exc: eg.EgressError) -> str:
    for cls, kind in ERROR_KINDS:
        if isinstance(exc, cls):
            return kind
    return "unsupported"


def _secret_middleware(secret: str) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), secret.encode()):
            return web.json_response({"error": "forbidden", "detail": "internal worker RPC"}, status=403)
        try:
            return await handler(request)
        except eg.EgressError as exc:
            body: dict[str, Any] = {"error": error_kind(exc), "detail": str(exc)}
            if isinstance(exc, eg.Overloaded):
                body.update(retry_after_s=exc.refusal.retry_after_s, load=exc.refusal.load)
            return web.json_response(body, status=409)

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
    worker = request.app[WORKER]
    return web.json_response({"sessions": worker.egress.sessions, "cameras": worker.states()})


async def status(request: web.Request) -> web.Response:
    found = request.app[WORKER].status(request.match_info["camera_id"])
    if found is None:
        return web.json_response({"error": "unknown_camera", "detail": request.match_info["camera_id"]}, status=404)
    return web.json_response(found)


async def sample(request: web.Request) -> web.Response:
    cameras = request.query.getall("camera", [])[:MAX_CAMERAS_PER_SAMPLE]
    return web.json_response(sample_worker(request.app[WORKER], request.app[NAME], cameras))


def create_rpc_app(worker: Worker, secret: str, name: str) -> web.Application:
    app = web.Application(middlewares=[_secret_middleware(secret)], client_max_size=256 * 1024)
    app[WORKER], app[NAME] = worker, name
    app.router.add_post("/offer", offer)
    app.router.add_post("/snapshot", snapshot)
    app.router.add_post("/patch", patch)
    app.router.add_post("/close", close)
    app.router.add_post("/close_all", close_all)
    app.router.add_get("/state", state)
    app.router.add_get("/status/{camera_id}", status)
    app.router.add_get("/sample", sample)
    return app
