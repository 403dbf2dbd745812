"""How the front talks to the media workers. Only this module knows where a worker lives.

`LocalWorkerClient` calls an in-process `Egress`; a later issue adds a client for worker processes. The
errors below are the front's own, so the HTTP layer never depends on a worker's internals.
"""

from __future__ import annotations

from typing import Any, Protocol

from mediaserver import egress as eg


class WorkerError(Exception):
    """Base of the errors a worker reports to the front."""


class UnknownCamera(WorkerError):
    pass


class UnknownSession(WorkerError):
    pass


class BadOffer(WorkerError):
    """The offer or fragment can't be used (unparsable SDP, no video, no H.264)."""


class Unsupported(WorkerError):
    """A valid request the worker does not implement (e.g. ICE restart)."""


class Overloaded(WorkerError):
    pass


class WorkerClient(Protocol):
    def has_camera(self, camera_id: str) -> bool: ...
    async def offer(self, camera_id: str, sdp: str) -> tuple[str, str]: ...
    async def patch(self, session_id: str, fragment: str) -> None: ...
    async def close(self, session_id: str) -> None: ...
    async def close_all(self) -> None: ...
    @property
    def sessions(self) -> list[dict[str, Any]]: ...


_ERRORS: list[tuple[type[Exception], type[WorkerError]]] = [
    (eg.UnknownCamera, UnknownCamera),
    (eg.UnknownSession, UnknownSession),
    (eg.BadOffer, BadOffer),
]


def _translate(exc: eg.EgressError) -> WorkerError:
    for theirs, ours in _ERRORS:
        if isinstance(exc, theirs):
            return ours(str(exc))
    return Unsupported(str(exc))


class LocalWorkerClient:
    """A worker in this process."""

    def __init__(self, egress: eg.Egress) -> None:
        self.egress = egress

    def has_camera(self, camera_id: str) -> bool:
        return self.egress.has_camera(camera_id)

    async def offer(self, camera_id: str, sdp: str) -> tuple[str, str]:
        try:
            return await self.egress.offer(camera_id, sdp)
        except eg.EgressError as exc:
            raise _translate(exc) from exc

    async def patch(self, session_id: str, fragment: str) -> None:
        try:
            await self.egress.patch(session_id, fragment)
        except eg.EgressError as exc:
            raise _translate(exc) from exc

    async def close(self, session_id: str) -> None:
        try:
            await self.egress.close(session_id)
        except eg.EgressError as exc:
            raise _translate(exc) from exc

    async def close_all(self) -> None:
        await self.egress.close_all()

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return self.egress.sessions
