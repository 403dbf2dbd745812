"""The front process on one machine: reads the camera registry, runs the media workers and serves HTTP
(WHEP, API, console, ops). The front reaches workers only through `WorkerClient`/`WorkerOps`.

`workers <= 1`: one worker inside this process (`LocalWorkerClient`; the tests' default).
`workers >= 2`: that many worker processes under a `Supervisor`, cameras split by the hash ring, each
WHEP session handed to the camera's worker (`RemoteWorkerClient`); media flows browser <-> worker.
`Front.resize(n)` (or `POST /ops/workers`) changes the count at runtime.

The registry is followed while the server runs (`RegistrySync`): cameras added, changed or removed by any
process reach the workers, the camera list and the incidents' scope within about a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from mediaserver.cluster.registry_sync import RegistrySync
from mediaserver.cluster.remote_worker import RemoteWorkerClient
from mediaserver.cluster.supervisor import Supervisor
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.registry import Registry
from mediaserver.worker import Worker, WorkerSettings
from signaling.access import ACCESS, AccessSettings
from signaling.app import create_app
from signaling.edge import LOOPBACK_HOSTS, EdgeSettings
from signaling.http_limits import HttpLimits, body_deadline
from signaling.ops_api import OpsSettings

log = logging.getLogger("goldentime.server")


def default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ServerSettings:
    db: str = "goldentime.db"
    host: str = "127.0.0.1"
    port: int = 8080
    cors_origins: list[str] = field(default_factory=list)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    workers: int = 0  # 0 or 1: in-process; N >= 2: N worker processes (the CLI defaults to one per core)
    metrics_allow: list[str] = field(default_factory=lambda: list(OpsSettings().metrics_allow))
    allowed_hosts: list[str] | None = None  # Host values answered (None: default_hosts(host, port))
    trusted_proxies: list[str] = field(default_factory=list)  # CIDRs whose X-Forwarded-For is believed
    access: AccessSettings = field(default_factory=AccessSettings)
    http: HttpLimits = field(default_factory=HttpLimits)  # slow and oversized requests (signaling/http_limits.py)


def default_hosts(host: str, port: int) -> list[str]:
    """The --http address and the loopback names, at the served port (any port when it is chosen at bind)."""
    names = [*LOOPBACK_HOSTS]
    if host not in ("0.0.0.0", "::", ""):  # a wildcard bind has no name: --allowed-hosts lists the real ones
        names.append(f"[{host}]" if ":" in host else host)
    return [f"{n}:{port}" if port else n for n in dict.fromkeys(names)]


def parse_http(value: str) -> tuple[str, int]:
    """ "HOST:PORT" (or "[v6]:PORT") -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(slots=True)
class Front:
    """What `stop()` needs: the HTTP runner and whichever worker arrangement runs."""

    runner: web.AppRunner
    registry: Registry
    sync: RegistrySync
    worker: Worker | None = None
    supervisor: Supervisor | None = None
    client: RemoteWorkerClient | None = None

    @property
    def port(self) -> int:
        return int(self.runner.addresses[0][1])

    async def resize(self, count: int) -> dict[str, object]:
        """Run `count` worker processes now (see RemoteWorkerClient.resize)."""
        if self.client is None:
            raise ValueError("workers run in-process: restart with --workers N")
        return await self.client.resize(count)


async def start(settings: ServerSettings) -> Front:
    """Start ingest for every registered camera and the HTTP front."""
    registry = Registry(settings.db)
    sync = RegistrySync(registry)  # before the workers boot: they read the registry as of then or later
    cameras = list(sync.cameras.values())
    front = Front(web.AppRunner(web.Application()), registry, sync)
    if settings.workers >= 2:
        front.supervisor = Supervisor(settings.workers, settings.db, settings.worker)
        try:
            await front.supervisor.start()
        except BaseException:
            await front.supervisor.stop()
            registry.close()
            raise
        front.client = client = RemoteWorkerClient(sync.cameras, front.supervisor, front.supervisor.secret)
        await client.start()
        ops: LocalWorkerClient | RemoteWorkerClient = client
        sessions: LocalWorkerClient | RemoteWorkerClient = client
        front_name: str | None = "front"
    else:
        front.worker = Worker(settings.worker)
        for camera in cameras:
            front.worker.add_camera(camera)
        ops = sessions = LocalWorkerClient(front.worker.egress, front.worker)
        front_name = None  # the front is worker "0": one process, one series

    def camera_list() -> list[dict[str, object]]:
        return [{**c, **ops.live(str(c["id"]))} for c in sync.public()]

    ops_settings = OpsSettings(metrics_allow=settings.metrics_allow, front_name=front_name)
    hosts = settings.allowed_hosts or default_hosts(settings.host, settings.port)
    edge = EdgeSettings(allowed_hosts=hosts, trusted_proxies=settings.trusted_proxies)
    app = create_app(
        sessions, camera_list, cors_origins=settings.cors_origins, db=settings.db, access=settings.access, ops=ops,
        ops_settings=ops_settings, edge=edge,
    )  # fmt: skip
    sync.sinks.append(ops)
    sync.listeners.append(app[ACCESS].refresh_cameras)  # a new camera is in an incident's scope at once
    sync.start()
    app.middlewares.insert(0, body_deadline(settings.http))  # outermost: sees the answer the client gets
    front.runner = web.AppRunner(app, access_log=None, **settings.http.runner_options())
    await front.runner.setup()
    await web.TCPSite(front.runner, settings.host, settings.port).start()
    log.info("serving %d cameras at http://%s:%d/ with %d worker(s)", len(cameras), settings.host, front.port,
             max(settings.workers, 1))  # fmt: skip
    return front


async def stop(front: Front) -> None:
    await front.sync.stop()
    await front.runner.cleanup()  # ends (and audits) every view, then closes the sessions on the workers
    if front.client is not None:
        await front.client.stop()
    if front.supervisor is not None:
        await front.supervisor.stop()
    if front.worker is not None:
        await front.worker.stop()
    front.registry.close()


async def serve_forever(settings: ServerSettings, on_ready: Callable[[], Awaitable[None] | None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    front = await start(settings)
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
        await stop(front)
