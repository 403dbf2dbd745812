"""The front process on one machine: reads the camera registry, runs the media worker in-process and
serves HTTP (WHEP, API, console). The front reaches the worker only through `WorkerClient`."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from mediaserver.registry import Registry
from mediaserver.worker import Worker, WorkerSettings
from signaling.app import create_app
from signaling.worker_client import LocalWorkerClient

log = logging.getLogger("goldentime.server")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    db: str = "goldentime.db"
    host: str = "127.0.0.1"
    port: int = 8080
    cors_origins: list[str] = field(default_factory=list)
    worker: WorkerSettings = field(default_factory=WorkerSettings)


def parse_http(value: str) -> tuple[str, int]:
    """ "HOST:PORT" (or "[v6]:PORT") -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def start(settings: ServerSettings) -> tuple[web.AppRunner, Worker, Registry]:
    """Start ingest for every registered camera and the HTTP front; returns what `stop()` needs."""
    registry = Registry(settings.db)
    worker = Worker(settings.worker)
    cameras = registry.list()
    for camera in cameras:
        worker.add_camera(camera)
    public = [c.public() for c in cameras]

    def camera_list() -> list[dict[str, object]]:
        return [{**c, **_live(worker, str(c["id"]))} for c in public]

    app = create_app(LocalWorkerClient(worker.egress), camera_list, cors_origins=settings.cors_origins, db=settings.db)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("serving %d cameras at http://%s:%d/", len(cameras), settings.host, settings.port)
    return runner, worker, registry


def _live(worker: Worker, camera_id: str) -> dict[str, object]:
    status = worker.status(camera_id) or {}
    return {"state": status.get("state", "unknown"), "codec": status.get("codec", "")}


async def stop(runner: web.AppRunner, worker: Worker, registry: Registry) -> None:
    await runner.cleanup()
    await worker.stop()
    registry.close()


async def serve_forever(settings: ServerSettings, on_ready: Callable[[], Awaitable[None] | None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    runner, worker, registry = await start(settings)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    if on_ready is not None:
        result = on_ready()
        if result is not None:
            await result
    try:
        await stopped.wait()
    finally:
        await stop(runner, worker, registry)
