"""The signaling front: WHEP, the camera API and the static console, with CORS for allow-listed origins, behind
the HTTP edge's checks (signaling/edge.py: Host, trusted proxies, refusals mapped to statuses)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from mediaserver.cluster.worker_client import WorkerClient, WorkerOps
from signaling import api, incident_api, openapi, operator_api, ops_api, session_api, whep
from signaling.access import AccessSettings
from signaling.cors import cors_middleware
from signaling.edge import EdgeSettings, guard_middleware, refusals


def find_web_dir() -> Path | None:
    """The console's static files: beside the package in a checkout or editable install, else where
    `pip install .` put them (setup.py's data_files)."""
    for candidate in (
        Path(__file__).resolve().parent.parent / "web",
        Path(sys.prefix) / "share" / "goldentime" / "web",
    ):
        if (candidate / "index.html").is_file():
            return candidate
    return None


WEB_DIR = find_web_dir()


def create_app(
    worker: WorkerClient,
    cameras: Callable[[], list[dict[str, Any]]],
    cors_origins: list[str] | None = None,
    web_dir: Path | None = WEB_DIR,
    db: str | Path = ":memory:",
    access: AccessSettings | None = None,
    ops: WorkerOps | None = None,
    ops_settings: ops_api.OpsSettings | None = None,
    edge: EdgeSettings | None = None,
) -> web.Application:
    """The HTTP front. `cameras()` returns the registry's cameras (only public fields are served);
    `cors_origins` lists the origins (scheme://host[:port], or "*") allowed to call WHEP and the API;
    `web_dir` (None: no console) holds the static pages, index at `/`; `db` is the SQLite file for clients,
    keys, incidents and the audit log (the default, in memory, has no clients: nothing can be viewed until
    one is registered and an incident opens a camera); `ops` (None: no ops routes) answers /metrics,
    /healthz, /readyz and camera status (signaling/ops_api.py); `edge` names the allowed Host values and the
    trusted reverse proxies (default: loopback names, no proxies)."""
    middlewares = [guard_middleware(edge or EdgeSettings()), cors_middleware(cors_origins or []), refusals,
                   session_api.sessions]  # innermost: its CSRF refusals go through `refusals`  # fmt: skip
    app = web.Application(middlewares=middlewares)
    incident_api.install(app, worker, cameras, db, access)  # first: its shutdown ends (and audits) views
    session_api.add_routes(app)
    operator_api.add_routes(app)
    whep.add_routes(app, worker)
    if ops is not None:
        ops_api.install(app, ops, ops_settings)
    app.add_routes(api.routes(cameras))
    openapi.add_routes(app)
    if web_dir is not None:
        index = web_dir / "index.html"

        async def console(request: web.Request) -> web.FileResponse:
            return web.FileResponse(index)

        app.router.add_get("/", console)
        app.router.add_static("/web/", web_dir)

    async def close_sessions(app: web.Application) -> None:
        await worker.close_all()

    app.on_shutdown.append(close_sessions)
    return app
