"""A media worker: always-on ingest of its cameras into hubs, and WebRTC egress from those hubs.

With `--workers 0/1` one worker runs inside the server process; otherwise each worker is a process of its
own (worker_main.py, supervised by supervisor.py) answering an internal RPC (worker_rpc.py). The front
reaches either kind only through `WorkerClient` (signaling/worker_client.py)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from mediaserver.bridge import StartPolicy
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from mediaserver.ingest import CameraIngest
from mediaserver.registry import Camera
from mediaserver.rtsp.batch_reader import BatchReader
from mediaserver.rtsp.client import Source, Timeouts
from mediaserver.rtsp.reconnect import RateLimiter


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    transport: str = "tcp"
    reconnect_rate: float = 50.0  # connection attempts per second, process-wide
    timeouts: Timeouts = field(default_factory=Timeouts)
    ice_hosts: list[str] | None = None  # restrict ICE host candidates (e.g. ["127.0.0.1"] in tests)
    first_picture: StartPolicy = "live"  # how a new viewer starts (bridge.py); others only for comparison
    idle_read_interval: float = 0.0  # s between socket reads of a camera nobody watches (0: read at once)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, to hand to a worker process."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerSettings:
        return cls(**{**data, "timeouts": Timeouts(**data.get("timeouts", {}))})


class Worker:
    def __init__(self, settings: WorkerSettings | None = None) -> None:
        self.settings = settings or WorkerSettings()
        self.hubs: dict[str, Hub] = {}
        self.ingests: dict[str, CameraIngest] = {}
        self.limiter = RateLimiter(self.settings.reconnect_rate)
        interval = self.settings.idle_read_interval
        self.batch = BatchReader(interval) if interval > 0 else None  # one for all this worker's cameras
        self.egress = Egress(self.hubs.get, self.settings.ice_hosts, self.settings.first_picture)

    def add_camera(self, camera: Camera) -> None:
        if camera.id in self.ingests:
            return
        hub = Hub(camera.id)
        source = Source(camera.url, camera.username, camera.password, self.settings.transport)
        ingest = CameraIngest(hub, source, self.limiter, self.settings.timeouts, batch=self.batch)
        self.hubs[camera.id] = hub
        self.ingests[camera.id] = ingest
        ingest.start()

    async def remove_camera(self, camera_id: str) -> None:
        ingest = self.ingests.pop(camera_id, None)
        hub = self.hubs.pop(camera_id, None)
        if ingest is not None:
            await ingest.stop()
        if hub is not None:
            hub.close()

    def status(self, camera_id: str) -> dict[str, object] | None:
        ingest = self.ingests.get(camera_id)
        return ingest.status() if ingest else None

    def states(self) -> dict[str, tuple[str, str]]:
        """camera id -> (ingest state, codec): what the camera list shows."""
        return {cid: (ingest.state.value, ingest.hub.codec) for cid, ingest in self.ingests.items()}

    async def stop(self) -> None:
        await self.egress.close_all()
        await asyncio.gather(*(self.remove_camera(cid) for cid in list(self.ingests)))
        if self.batch is not None:
            await self.batch.close()
