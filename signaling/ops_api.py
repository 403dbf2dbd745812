"""Operations endpoints: liveness, readiness, Prometheus metrics and one camera's health.

    GET /healthz                   200 while the process serves HTTP (no body worth hiding)
    GET /readyz                    200 once the registry is loaded and every worker is up, else 503
    GET /metrics[?camera=ID...]    Prometheus text (mediaserver/metrics.py); named cameras add per-camera series
    GET /ops/workers               the worker processes: index, pid, up, restarts, CPU, RSS, cameras by state
                                   (a dead or restarting worker's cameras: "worker_down")
    POST /ops/workers {"count": N} run N worker processes; only the cameras whose owner changes move, each
                                   started on its new worker before it stops on the old one
    GET /api/cameras/{id}/status   state, codec, transport, connects, errors, GOP age, viewers: never the URL
                                   or credentials

Who may call them: /healthz and /readyz are open (load balancers and orchestrators probe them and they say
nothing but up/down). /metrics and /ops/workers are for the operator's own scraper: they answer only
addresses in `OpsSettings.metrics_allow` (default: loopback only, so a default install leaks nothing; a
Prometheus elsewhere is added with `--metrics-allow 10.0.0.0/8`). Traffic volumes and error kinds per
camera are operational data, not public. A camera's status is for the callers who may see the camera
(signaling/access.py): a stream token whose incident covers it now, an agency client whose agency's open
incidents cover it, an admin client for any camera; everyone else gets 403 whether the id exists or not.

POST /ops/workers changes the server: besides the scrape allow-list it needs an admin credential (a client
with role `admin`, `mediaserver clients add --role admin`, by HTTP Basic or a bearer token from /oauth/token),
a JSON body and no `Origin` header (a web page can make a browser send neither to another origin without a
CORS preflight, which this route never answers; operators' tools such as curl send no Origin). Every request
is also held to the allowed `Host` names and trusted proxies of signaling/edge.py.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from mediaserver.cluster.worker_client import Unsupported, WorkerOps
from mediaserver.metrics import CONTENT_TYPE, process_sample, render
from signaling.access import ACCESS
from signaling.api import _is_stream_token
from signaling.edge import bearer, caller
from signaling.incident_api import authenticate
from signaling.json_body import read_json

MAX_CAMERAS_PER_SCRAPE = 100
MAX_WORKERS = 256
LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True, slots=True)
class OpsSettings:
    metrics_allow: Sequence[str] = field(default_factory=lambda: list(LOOPBACK))  # CIDRs that may scrape
    front_name: str | None = "front"  # this process's CPU/RSS series (None: the front is worker "0" itself)


OPS: web.AppKey[WorkerOps] = web.AppKey("ops")
OPS_SETTINGS: web.AppKey[OpsSettings] = web.AppKey("ops_settings")
READY: web.AppKey[Callable[[], bool]] = web.AppKey("ops_ready")


def allowed(remote: str | None, networks: Sequence[str]) -> bool:
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in networks)


def _scraper_only(request: web.Request) -> None:
    if not allowed(request.remote, request.app[OPS_SETTINGS].metrics_allow):
        raise web.HTTPForbidden(text='{"error": "forbidden", "detail": "not an allowed scraper address"}',
                                content_type="application/json")  # fmt: skip


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ops = request.app[OPS]
    workers = ops.workers()
    up = sum(1 for w in workers if w.get("up"))
    ready = request.app[READY]() and ops.ready()
    return web.json_response({"ready": ready, "workers": len(workers), "workers_up": up}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    _scraper_only(request)
    cameras = request.query.getall("camera", [])[:MAX_CAMERAS_PER_SCRAPE]
    ops = request.app[OPS]
    samples = await ops.samples(cameras)
    name = request.app[OPS_SETTINGS].front_name
    front = process_sample(name) if name else None
    text = render(samples, front, ops.workers())
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def workers(request: web.Request) -> web.Response:
    _scraper_only(request)
    return web.json_response({"at": time.time(), "workers": request.app[OPS].workers()})


async def resize_workers(request: web.Request) -> web.Response:
    _scraper_only(request)
    request.app[ACCESS].check_admin(caller(request), await authenticate(request))  # 401/403, audited
    if "Origin" in request.headers or request.content_type != "application/json":
        raise web.HTTPForbidden(text='{"error": "forbidden", "detail": "operator tools only: JSON body, no Origin"}',
                                content_type="application/json")  # fmt: skip
    try:
        body = await read_json(request, limit=4096)  # 413/400 (too deep, not JSON) like every JSON endpoint
        count = int(body["count"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "bad request", "detail": 'want {"count": N}, N >= 1'}, status=400)
    if not 1 <= count <= MAX_WORKERS:
        return web.json_response({"error": "bad request", "detail": f"count must be 1..{MAX_WORKERS}"}, status=400)
    try:
        result = await request.app[OPS].resize(count)
    except Unsupported as exc:
        return web.json_response({"error": "unsupported", "detail": str(exc)}, status=409)
    return web.json_response({**result, "workers_now": request.app[OPS].workers()})


async def camera_status(request: web.Request) -> web.Response:
    camera_id = request.match_info["camera_id"]
    access = request.app[ACCESS]
    who = caller(request)
    if _is_stream_token(request):
        grant = access.verify_stream(bearer(request), who, camera_id)
        access.check_scope(who, grant, camera_id)  # 403 (audited) outside the incident's scope, known or not
    else:
        access.check_camera(who, await authenticate(request), camera_id)  # the same for clients
    status = await request.app[OPS].camera_status(camera_id)
    if status is None:
        return web.json_response({"error": "unknown camera", "detail": camera_id}, status=404)
    return web.json_response({"id": camera_id, **status})


def install(
    app: web.Application, ops: WorkerOps, settings: OpsSettings | None = None, ready: Callable[[], bool] | None = None
) -> None:
    """`ready()` says whether the front itself is ready (registry loaded); workers are asked through `ops`."""
    app[OPS] = ops
    app[OPS_SETTINGS] = settings or OpsSettings()
    app[READY] = ready or (lambda: True)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ops/workers", workers)
    app.router.add_post("/ops/workers", resize_workers)
    app.router.add_get("/api/cameras/{camera_id}/status", camera_status)
