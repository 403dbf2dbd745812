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
from mediaserver.recording import RecordingRing, RecordSettings
from mediaserver.registry import Camera
from mediaserver.rtsp.batch_reader import BatchReader
from mediaserver.rtsp.client import Source, Timeouts
from mediaserver.rtsp.reconnect import RateLimiter
from mediaserver.viewer_networks import ViewerNetworks

SUBSTREAM_STATUS = ("state", "codec", "connects", "units", "gop_age_s", "viewers", "last_error")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    transport: str = "tcp"
    reconnect_rate: float = 50.0  # connection attempts per second, process-wide
    # first connects per second (a worker starting, or restarted after a crash: its cameras must be back within
    # seconds); each camera's first attempt only, so a camera that keeps failing falls back to reconnect_rate
    start_rate: float = 400.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    ice_hosts: list[str] | None = None  # restrict ICE host candidates (e.g. ["127.0.0.1"] in tests)
    # CIDRs viewers' ICE candidates may point into (None: viewer_networks.default_for(ice_hosts))
    viewer_networks: list[str] | None = None
    first_picture: StartPolicy = "live"  # how a new viewer starts (bridge.py); others only for comparison
    idle_read_interval: float = 0.0  # s between socket reads of a camera nobody watches (0: read at once)
    ingest_substreams: bool = True  # ingest registered sub-streams (always on) for the `low` profile
    record_dir: str | None = None  # the recording ring's directory (recording.py; None: nothing recorded)
    record_seconds: float = 120.0  # how far back the ring reaches
    record_max_bytes: int = 0  # disk cap of all workers' rings together (0: the window at the expected rate)
    record_workers: int = 1  # how many workers share that cap

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, to hand to a worker process."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerSettings:
        return cls(**{**data, "timeouts": Timeouts(**data.get("timeouts", {}))})


def _main_source(camera: Camera) -> tuple[str, str | None, str | None]:
    return camera.url, camera.username, camera.password


def _sub_source(camera: Camera) -> tuple[str | None, str | None, str | None]:
    return camera.substream_url, camera.username, camera.password  # a camera's streams share its credentials


class Worker:
    """Ingest of the cameras this worker was given, and egress from their hubs.

    A camera's registered sub-stream is ingested too, always on like the main stream, into a hub of its own
    (`sub_hubs`): the `low` profile passes it through instead of transcoding (egress.py). Always on, because
    a grid must open on the present picture like any view (on demand would cost a cold RTSP handshake and a
    wait for a keyframe per tile); a sub-stream costs a fraction of its main stream. `ingest_substreams=False`
    trades that back for capacity (the `low` profile then transcodes)."""

    def __init__(self, settings: WorkerSettings | None = None, name: str = "w0") -> None:
        self.settings = settings or WorkerSettings()
        self.cameras: dict[str, Camera] = {}
        self.hubs: dict[str, Hub] = {}
        self.ingests: dict[str, CameraIngest] = {}
        self.sub_hubs: dict[str, Hub] = {}
        self.sub_ingests: dict[str, CameraIngest] = {}
        self.limiter = RateLimiter(self.settings.reconnect_rate)
        self.start_limiter = RateLimiter(self.settings.start_rate)
        interval = self.settings.idle_read_interval
        self.batch = BatchReader(interval) if interval > 0 else None  # one for all this worker's cameras
        self.recording = _recording_ring(self.settings, name)
        networks = self.settings.viewer_networks
        self.egress = Egress(
            self.hubs.get, self.settings.ice_hosts, self.settings.first_picture, substream_lookup=self.sub_hubs.get,
            viewer_networks=None if networks is None else ViewerNetworks.parse(networks),
        )  # fmt: skip

    def add_camera(self, camera: Camera) -> None:
        """Start ingest of a camera this worker does not have yet (one it has is left as it is)."""
        if camera.id in self.ingests:
            return
        self.cameras[camera.id] = camera
        hub = Hub(camera.id)
        self.hubs[camera.id] = hub
        self.ingests[camera.id] = self._ingest(hub, camera.url, camera)
        self._start_substream(camera)
        self._record(camera.id)

    async def put_camera(self, camera: Camera) -> str:
        """Add a camera or apply its registry change: "added", "restarted" (the main stream's URL or
        credentials changed: its ingest starts again on the same hub, so viewers stay), "substream" (only the
        sub-stream changed), "updated" (name or place only) or "unchanged"."""
        old = self.cameras.get(camera.id)
        if old is None:
            self.add_camera(camera)
            return "added"
        if old == camera:
            return "unchanged"
        self.cameras[camera.id] = camera
        outcome = "updated"
        if _sub_source(old) != _sub_source(camera):
            await self._stop_substream(camera.id)
            self._start_substream(camera)
            self._record(camera.id)
            outcome = "substream"
        if _main_source(old) != _main_source(camera):
            hub = self.hubs[camera.id]
            await self.ingests[camera.id].stop()
            self.ingests[camera.id] = self._ingest(hub, camera.url, camera)
            outcome = "restarted"
        return outcome

    def _record(self, camera_id: str) -> None:
        """The ring records a camera's sub-stream, or its main stream where it has none, under the camera's id."""
        if self.recording is None:
            return
        slot = self.recording.camera(camera_id)
        sub, main = self.sub_hubs.get(camera_id), self.hubs[camera_id]
        main.record_into(None if sub is not None else self.recording.ring, slot)
        if sub is not None:
            sub.record_into(self.recording.ring, slot)

    def recording_stats(self) -> dict[str, object] | None:
        return None if self.recording is None else self.recording.stats()

    def _ingest(self, hub: Hub, url: str, camera: Camera) -> CameraIngest:
        source = Source.of_camera(url, camera.username, camera.password, self.settings.transport)
        ingest = CameraIngest(
            hub, source, self.limiter, self.settings.timeouts, batch=self.batch, start_limiter=self.start_limiter
        )
        ingest.start()
        return ingest

    def _start_substream(self, camera: Camera) -> None:
        if camera.substream_url and self.settings.ingest_substreams:
            hub = Hub(f"{camera.id}/sub")  # its own id: bridges and snapshots are keyed by hub id
            self.sub_hubs[camera.id] = hub
            self.sub_ingests[camera.id] = self._ingest(hub, camera.substream_url, camera)

    async def _stop_substream(self, camera_id: str) -> None:
        ingest, hub = self.sub_ingests.pop(camera_id, None), self.sub_hubs.pop(camera_id, None)
        if ingest is not None:
            await ingest.stop()
        if hub is not None:
            hub.close()

    async def remove_camera(self, camera_id: str) -> None:
        self.cameras.pop(camera_id, None)
        ingest = self.ingests.pop(camera_id, None)
        hub = self.hubs.pop(camera_id, None)
        await self._stop_substream(camera_id)
        if ingest is not None:
            await ingest.stop()
        if hub is not None:
            hub.close()

    def status(self, camera_id: str) -> dict[str, object] | None:
        ingest = self.ingests.get(camera_id)
        if ingest is None:
            return None
        status = ingest.status()
        sub = self.sub_ingests.get(camera_id)
        if sub is not None:
            status["substream"] = {k: v for k, v in sub.status().items() if k in SUBSTREAM_STATUS}
        return status

    def states(self) -> dict[str, tuple[str, str, bool]]:
        """camera id -> (ingest state, codec, has a picture): what the camera list shows and what a handover
        waits for (a keyframe cached: a viewer opens at once)."""
        return {
            cid: (ingest.state.value, ingest.hub.codec, ingest.hub.gop_bytes > 0)
            for cid, ingest in self.ingests.items()
        }

    async def stop(self) -> None:
        await self.egress.close_all()
        await asyncio.gather(*(self.remove_camera(cid) for cid in list(self.ingests)))
        if self.batch is not None:
            await self.batch.close()
        if self.recording is not None:
            await asyncio.to_thread(self.recording.close)


def _recording_ring(settings: WorkerSettings, name: str) -> RecordingRing | None:
    if settings.record_dir is None or settings.record_seconds <= 0:
        return None
    share = settings.record_max_bytes // max(settings.record_workers, 1)
    return RecordingRing(RecordSettings(settings.record_dir, settings.record_seconds, share), name)
