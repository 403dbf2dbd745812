"""`RemoteWorkerClient`: the `WorkerClient` and `WorkerOps` protocols over worker processes' internal RPC
(mediaserver/worker_rpc.py).

Routing: a camera's worker is its owner on the same hash ring the workers use; a session's worker is
remembered from the offer that made it. Media then flows browser <-> worker directly (the worker's ICE
candidates are in the answer); the front carries only signaling.

`sessions` and `live()` must answer without I/O (the access sweep and the camera list call them often), so a
poll keeps a cache of every worker's sessions and camera states. A session made after a poll was sent is
kept until a later poll can have seen it, so the sweep never ends a view that is only too new to be listed.
Sessions of a worker that died are gone with it: they are dropped when its generation changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp

from mediaserver.hashring import HashRing, worker_index
from mediaserver.metrics import Sample
from mediaserver.supervisor import Endpoint
from mediaserver.worker_rpc import SECRET_HEADER
from signaling.worker_client import (
    UNKNOWN,
    BadOffer,
    NotYet,
    Overloaded,
    UnknownCamera,
    UnknownSession,
    Unsupported,
    WorkerError,
    WorkerUnavailable,
)

log = logging.getLogger(__name__)

POLL_S = 0.5
RPC_TIMEOUT_S = 15.0  # an offer waits for ICE gathering on the worker
_KINDS: dict[str, type[WorkerError]] = {
    "unknown_camera": UnknownCamera,
    "unknown_session": UnknownSession,
    "bad_offer": BadOffer,
    "unsupported": Unsupported,
    "not_yet": NotYet,
}


class Directory(Protocol):
    """Where the workers are now (mediaserver.supervisor.Supervisor)."""

    count: int

    def endpoint(self, index: int) -> Endpoint | None: ...
    def describe(self) -> list[dict[str, object]]: ...


@dataclass(slots=True)
class _Known:
    """What the front knows of one worker: its sessions and camera states, as of `generation`."""

    generation: int = 0
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    born: dict[str, float] = field(default_factory=dict)  # session id -> when the offer returned
    cameras: dict[str, tuple[str, str]] = field(default_factory=dict)


class RemoteWorkerClient:
    def __init__(self, cameras: Iterable[str], ring: HashRing, directory: Directory, secret: str) -> None:
        self._cameras = set(cameras)
        self._ring = ring
        self._directory = directory
        self._secret = secret
        self._known = [_Known() for _ in range(directory.count)]
        self._http: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            headers={SECRET_HEADER: self._secret}, timeout=aiohttp.ClientTimeout(total=RPC_TIMEOUT_S)
        )
        self._poller = asyncio.create_task(self._poll_forever(), name="worker-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._http is not None:
            await self._http.close()

    def worker_of(self, camera_id: str) -> int:
        return worker_index(self._ring, camera_id)

    # --- WorkerClient ---
    def has_camera(self, camera_id: str) -> bool:
        return camera_id in self._cameras

    async def offer(self, camera_id: str, sdp: str, profile: str | None = None) -> tuple[str, str]:
        if camera_id not in self._cameras:
            raise UnknownCamera(camera_id)
        index = self.worker_of(camera_id)
        body = {"camera_id": camera_id, "sdp": sdp, "profile": profile}
        generation, reply = await self._call(index, "/offer", body)
        session_id = str(reply["session_id"])
        known = self._current(index, generation)
        known.sessions[session_id] = {"id": session_id, "camera_id": camera_id, "worker": index}
        known.born[session_id] = time.monotonic()
        return session_id, str(reply["answer"])

    async def snapshot(self, camera_id: str, width: int | None = None) -> bytes:
        if camera_id not in self._cameras:
            raise UnknownCamera(camera_id)
        _, reply = await self._call(self.worker_of(camera_id), "/snapshot", {"camera_id": camera_id, "width": width})
        return bytes(reply["body"])

    async def patch(self, session_id: str, fragment: str) -> None:
        await self._call(self._session_worker(session_id), "/patch", {"session_id": session_id, "fragment": fragment})

    async def close(self, session_id: str) -> None:
        index = self._session_worker(session_id)
        self._known[index].sessions.pop(session_id, None)
        try:
            await self._call(index, "/close", {"session_id": session_id})
        except WorkerUnavailable:
            raise UnknownSession(session_id) from None  # its worker died: the session died with it

    async def close_all(self) -> None:
        calls = [self._call(i, "/close_all", {}) for i in range(len(self._known)) if self._directory.endpoint(i)]
        await asyncio.gather(*calls, return_exceptions=True)
        for known in self._known:
            known.sessions.clear()

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return [s for known in self._known for s in known.sessions.values()]

    # --- WorkerOps ---
    def ready(self) -> bool:
        return all(self._directory.endpoint(i) is not None for i in range(len(self._known)))

    def workers(self) -> list[dict[str, Any]]:
        return [{**w, "cameras": len(k.cameras)} for w, k in zip(self._directory.describe(), self._known, strict=True)]

    def live(self, camera_id: str) -> dict[str, str]:
        found = self._known[self.worker_of(camera_id)].cameras.get(camera_id) if camera_id in self._cameras else None
        return {"state": found[0], "codec": found[1]} if found else UNKNOWN

    async def camera_status(self, camera_id: str) -> dict[str, Any] | None:
        if camera_id not in self._cameras:
            return None
        index = self.worker_of(camera_id)
        try:
            _, status = await self._call(index, f"/status/{quote(camera_id, safe='')}", None)
        except UnknownCamera:
            return None
        except WorkerUnavailable:
            return {"state": "worker_restarting", "worker": index}
        return {**status, "worker": index}

    async def samples(self, cameras: Sequence[str] = ()) -> list[Sample]:
        query = urlencode([("camera", c) for c in cameras if c in self._cameras])
        calls = [self._call(i, f"/sample?{query}", None) for i in range(len(self._known))]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return [r[1] for r in results if isinstance(r, tuple)]  # a worker that is down has no sample

    # --- plumbing ---
    def _session_worker(self, session_id: str) -> int:
        for index, known in enumerate(self._known):
            if session_id in known.sessions:
                return index
        raise UnknownSession(session_id)

    def _current(self, index: int, generation: int) -> _Known:
        """The worker's record, emptied if the worker restarted since we last looked."""
        known = self._known[index]
        if known.generation != generation:
            self._known[index] = known = _Known(generation)
        return known

    async def _call(self, index: int, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """POST `body` (GET if None) to worker `index`; returns (its generation, the JSON reply, or
        {"body": bytes} for a binary one)."""
        endpoint = self._directory.endpoint(index)
        if endpoint is None or self._http is None:
            raise WorkerUnavailable(f"worker {index} is restarting")
        url = endpoint.url + path
        try:
            request = self._http.get(url) if body is None else self._http.post(url, json=body)
            async with request as response:
                if response.status < 400 and response.content_type != "application/json":
                    return endpoint.generation, {"body": await response.read()}
                reply = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise WorkerUnavailable(f"worker {index}: {exc!r}") from None
        if response.status >= 400:
            raise _error(reply if isinstance(reply, dict) else {})
        return endpoint.generation, reply

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(i) for i in range(len(self._known))))
            await asyncio.sleep(POLL_S)

    async def _poll(self, index: int) -> None:
        sent = time.monotonic()
        try:
            generation, state = await self._call(index, "/state", None)
        except WorkerError:
            if self._directory.endpoint(index) is None:  # down: its sessions and states are gone with it
                self._known[index] = _Known(-1)
            return
        known = self._current(index, generation)
        listed = {str(s["id"]): {**s, "worker": index} for s in state["sessions"]}
        for session_id, born in list(known.born.items()):
            if born >= sent and session_id not in listed:  # too new for this answer: keep it
                listed[session_id] = known.sessions.get(session_id, {"id": session_id, "worker": index})
            elif born < sent and session_id not in listed:
                known.born.pop(session_id, None)
        known.sessions = listed
        known.cameras = {cid: (st[0], st[1]) for cid, st in state["cameras"].items()}


def _error(reply: dict[str, Any]) -> WorkerError:
    kind, detail = str(reply.get("error", "")), str(reply.get("detail", ""))
    if kind == "overloaded":
        return Overloaded(detail, int(reply.get("retry_after_s", 5)), reply.get("load") or {})
    return _KINDS.get(kind, Unsupported)(detail)
