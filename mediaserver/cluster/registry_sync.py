"""The front's copy of the camera registry, kept current while the server runs.

Every `POLL_S` it reads the registry's change marker (`Registry.revision()`: one row); only when that moved
does it read what changed (`Registry.changes()`: the rows past the revision it has, and removed ids). Each
change goes to the sinks: the workers (signaling/remote_worker.py sends ids only to the worker that runs the
camera; in-process, the worker itself) and whoever else follows the camera list. So `mediaserver cameras
add/import` run from another process reaches viewers within about a second, with no restart, and a steady
registry costs one tiny read per second whatever the number of cameras.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from mediaserver.cluster.worker_client import CameraSink
from mediaserver.registry import Camera, Registry

log = logging.getLogger("goldentime.registry")

POLL_S = 1.0


class RegistrySync:
    def __init__(self, registry: Registry, poll_s: float = POLL_S) -> None:
        self.registry = registry
        self.poll_s = poll_s
        self.revision, cameras = registry.snapshot()
        self.cameras: dict[str, Camera] = {c.id: c for c in cameras}
        self._public: dict[str, dict[str, object]] = {c.id: c.public() for c in cameras}
        self.sinks: list[CameraSink] = []
        self.listeners: list[Callable[[], object]] = []  # told (no arguments) after each applied change
        self._task: asyncio.Task[None] | None = None

    def public(self) -> list[dict[str, object]]:
        """The cameras as clients may see them (never URLs or credentials)."""
        return list(self._public.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll_forever(), name="registry-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def poll(self) -> tuple[list[Camera], list[str]]:
        """Apply what changed since the last poll; returns (changed cameras, removed ids)."""
        if self.registry.revision() == self.revision:
            return [], []
        changes = self.registry.changes(self.revision)
        changed = [c for c in changes.changed if self.cameras.get(c.id) != c]
        removed = [cid for cid in changes.removed if cid in self.cameras]
        self.revision = changes.revision
        for camera in changed:
            self.cameras[camera.id] = camera
            self._public[camera.id] = camera.public()
        for camera_id in removed:
            self.cameras.pop(camera_id, None)
            self._public.pop(camera_id, None)
        if changed or removed:
            log.info("registry revision %d: %d cameras added or changed, %d removed", self.revision, len(changed),
                     len(removed))  # fmt: skip
            await self._tell(changed, removed)
        return changed, removed

    async def _tell(self, changed: Sequence[Camera], removed: Sequence[str]) -> None:
        for sink in self.sinks:
            await sink.cameras_changed(changed, removed)
        for listener in self.listeners:
            listener()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll()
            except Exception:  # a locked or broken database must not stop the server; try again next tick
                log.exception("registry poll failed")
