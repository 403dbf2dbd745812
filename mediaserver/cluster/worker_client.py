"""How the front talks to the media workers. Only this module knows where a worker lives.

Two protocols: `WorkerClient` (viewer sessions: what WHEP and the access layer need) and `WorkerOps`
(health, camera status and metrics samples: what signaling/ops_api.py needs). Two implementations of both:
`LocalWorkerClient` calls an in-process worker (`--workers 0/1`, and the tests); `RemoteWorkerClient`
(remote_worker.py) calls worker processes over their internal RPC. Both raise the session errors of
mediaserver/errors.py, so the HTTP layer never depends on a worker's internals.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mediaserver import egress as eg
from mediaserver.errors import Unsupported
from mediaserver.metrics import Sample, process_sample, sample_worker
from mediaserver.registry import Camera

if TYPE_CHECKING:
    from mediaserver.worker import Worker


class WorkerClient(Protocol):
    def has_camera(self, camera_id: str) -> bool: ...
    async def offer(self, camera_id: str, sdp: str, profile: str | None = None) -> tuple[str, str]: ...
    async def snapshot(self, camera_id: str, width: int | None = None) -> bytes: ...
    async def patch(self, session_id: str, fragment: str) -> None: ...
    async def close(self, session_id: str) -> None: ...
    async def close_all(self) -> None: ...
    @property
    def sessions(self) -> list[dict[str, Any]]: ...


class WorkerOps(Protocol):
    def ready(self) -> bool:
        """Every worker is up."""
        ...

    def workers(self) -> list[dict[str, Any]]:
        """One entry per worker: index, up, restarts, pid (for operators; never shown to clients)."""
        ...

    def live(self, camera_id: str) -> dict[str, str]:
        """{"state", "codec"} of a camera, cheap (no I/O): what the camera list shows."""
        ...

    async def camera_status(self, camera_id: str) -> dict[str, Any] | None: ...
    async def samples(self, cameras: Sequence[str] = ()) -> list[Sample]: ...

    async def resize(self, count: int) -> dict[str, Any]:
        """Run `count` workers, moving ~1/count of the cameras (Unsupported where workers are in-process)."""
        ...


class CameraSink(Protocol):
    """Takes the registry's changes (signaling/registry_sync.py) to the workers that run those cameras."""

    async def cameras_changed(self, changed: Sequence[Camera], removed: Sequence[str]) -> None: ...


UNKNOWN = {"state": "unknown", "codec": ""}
LOCAL_NAME = "0"  # the in-process worker's name in metrics (the front is that process)
WORKER_DOWN = {"state": "worker_down", "codec": ""}  # the camera's worker is dead or restarting


class LocalWorkerClient:
    """A worker in this process (`worker` may be None where a test drives an `Egress` alone)."""

    def __init__(self, egress: eg.Egress, worker: Worker | None = None) -> None:
        self.egress = egress
        self.worker = worker

    def has_camera(self, camera_id: str) -> bool:
        return self.egress.has_camera(camera_id)

    async def offer(self, camera_id: str, sdp: str, profile: str | None = None) -> tuple[str, str]:
        return await self.egress.offer(camera_id, sdp, profile)

    async def snapshot(self, camera_id: str, width: int | None = None) -> bytes:
        return await self.egress.snapshot(camera_id, width)

    async def patch(self, session_id: str, fragment: str) -> None:
        await self.egress.patch(session_id, fragment)

    async def close(self, session_id: str) -> None:
        await self.egress.close(session_id)

    async def close_all(self) -> None:
        await self.egress.close_all()

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return self.egress.sessions

    # --- WorkerOps ---
    def ready(self) -> bool:
        return True

    def workers(self) -> list[dict[str, Any]]:
        usage = process_sample(LOCAL_NAME)
        cameras = len(self.worker.ingests) if self.worker else 0
        states: dict[str, int] = {}
        for ingest in self.worker.ingests.values() if self.worker else ():
            states[ingest.state.value] = states.get(ingest.state.value, 0) + 1
        return [{"index": 0, "name": LOCAL_NAME, "pid": os.getpid(), "up": True, "in_process": True, "restarts": 0,
                 "cpu_seconds": usage["cpu_seconds"], "resident_bytes": usage["resident_bytes"],
                 "cameras": cameras, "states": states}]  # fmt: skip

    def live(self, camera_id: str) -> dict[str, str]:
        ingest = self.worker.ingests.get(camera_id) if self.worker else None
        return {"state": ingest.state.value, "codec": ingest.hub.codec} if ingest else UNKNOWN

    async def camera_status(self, camera_id: str) -> dict[str, Any] | None:
        return self.worker.status(camera_id) if self.worker else None

    async def samples(self, cameras: Sequence[str] = ()) -> list[Sample]:
        return [sample_worker(self.worker, LOCAL_NAME, cameras)]

    async def resize(self, count: int) -> dict[str, Any]:
        raise Unsupported("the worker runs inside the server (--workers 0/1): restart with --workers N")

    async def cameras_changed(self, changed: Sequence[Camera], removed: Sequence[str]) -> None:
        if self.worker is None:
            return
        for camera in changed:
            await self.worker.put_camera(camera)
        for camera_id in removed:
            await self.worker.remove_camera(camera_id)
