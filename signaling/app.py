"""The signaling front: WHEP, the camera API and the static console, with CORS for allow-listed origins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from signaling import api, whep
from signaling.cors import cors_middleware
from signaling.worker_client import WorkerClient

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(
    worker: WorkerClient,
    cameras: Callable[[], list[dict[str, Any]]],
    cors_origins: list[str] | None = None,
    web_dir: Path | None = WEB_DIR,
) -> web.Application:
    """The HTTP front. `cameras()` returns the registry's cameras (only public fields are served);
    `cors_origins` lists the origins (scheme://host[:port], or "*") allowed to call WHEP and the API;
    `web_dir` (None: no console) holds the static pages, index at `/`."""
    app = web.Application(middlewares=[cors_middleware(cors_origins or [])])
    whep.add_routes(app, worker)
    app.add_routes(api.routes(cameras))
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
