"""`RemoteWorkerClient`: the `WorkerClient` and `WorkerOps` protocols over worker processes' internal RPC
(mediaserver/worker_rpc.py).

Routing: which worker serves a camera is `Placement`'s record (signaling/placement.py: the hash ring's owner,
except during a handover); a session's worker is remembered from the offer that made it. Media then flows
browser <-> worker directly (the worker's ICE candidates are in the answer); the front carries only signaling.

`sessions` and `live()` must answer without I/O (the access sweep and the camera list call them often), so a
poll keeps a cache of every worker's sessions and camera states. The poll asks for deltas (worker_rpc.StateFeed:
at 10,000 cameras a steady-state answer is a few bytes, not every camera again), and a full answer only when
the worker restarted or an answer was lost. A session made after a poll was sent is kept until a later poll
can have seen it, so the sweep never ends a view that is only too new to be listed. Sessions of a worker that
died are gone with it: they are dropped when its generation changes. A worker that is down reports each of
its cameras as "worker_down" until it is back.

Registry changes reach workers as deltas of camera ids (`cameras_changed`, fed by signaling/registry_sync.py),
sent only to the workers that serve those cameras; a worker that answers with a new generation (it restarted)
is reconciled against what it should run. `resize(n)` changes the worker count at runtime: the cameras that
move (~1/n) start on their new worker, the route switches once they stream there, then the old worker
stops them.
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

from mediaserver.cluster.placement import Move, Placement
from mediaserver.cluster.supervisor import Endpoint
from mediaserver.cluster.worker_client import UNKNOWN, WORKER_DOWN
from mediaserver.cluster.worker_rpc import SECRET_HEADER
from mediaserver.errors import SessionError, UnknownCamera, UnknownSession, WorkerUnavailable, from_wire
from mediaserver.metrics import Sample
from mediaserver.registry import Camera

log = logging.getLogger(__name__)

POLL_S = 0.5
RPC_TIMEOUT_S = 15.0  # an offer waits for ICE gathering on the worker
HANDOVER_S = 10.0  # how long a moving camera may take to stream on its new worker before the route switches
MAX_IDS_PER_CALL = 2000
CameraState = tuple[str, str, bool]  # ingest state, codec, has a picture (worker.Worker.states)


class Directory(Protocol):
    """Where the workers are now (mediaserver.cluster.supervisor.Supervisor)."""

    count: int

    def endpoint(self, index: int) -> Endpoint | None: ...
    def describe(self) -> list[dict[str, object]]: ...
    async def resize(self, count: int) -> None: ...


@dataclass(slots=True)
class _Known:
    """What the front knows of one worker: its sessions and camera states, as of `generation`."""

    generation: int = 0
    cursor: str = ""  # of the worker's last state answer (worker_rpc.StateFeed)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    born: dict[str, float] = field(default_factory=dict)  # session id -> when the offer returned
    cameras: dict[str, CameraState] = field(default_factory=dict)


@dataclass(slots=True)
class _Outbox:
    """Registry deltas not yet acknowledged by a worker (kept across failures; sent again)."""

    put: set[str] = field(default_factory=set)
    remove: set[str] = field(default_factory=set)

    def add(self, put: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        for camera_id in put:
            self.remove.discard(camera_id)
            self.put.add(camera_id)
        for camera_id in remove:
            self.put.discard(camera_id)
            self.remove.add(camera_id)


class RemoteWorkerClient:
    def __init__(self, cameras: Iterable[str], directory: Directory, secret: str) -> None:
        self._placement = Placement(directory.count, cameras)
        self._directory = directory
        self._secret = secret
        self._known = [_Known() for _ in range(directory.count)]
        self._outbox = [_Outbox() for _ in range(directory.count)]
        self._http: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        self._resizing = asyncio.Lock()
        self._flushing = asyncio.Lock()

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
        index = self._placement.route.get(camera_id)
        if index is None:
            raise UnknownCamera(camera_id)
        return index

    # --- WorkerClient ---
    def has_camera(self, camera_id: str) -> bool:
        return camera_id in self._placement.route

    async def offer(self, camera_id: str, sdp: str, profile: str | None = None) -> tuple[str, str]:
        index = self.worker_of(camera_id)
        body = {"camera_id": camera_id, "sdp": sdp, "profile": profile}
        generation, reply = await self._call(index, "/offer", body)
        session_id = str(reply["session_id"])
        known = self._current(index, generation)
        known.sessions[session_id] = {"id": session_id, "camera_id": camera_id, "worker": index}
        known.born[session_id] = time.monotonic()
        return session_id, str(reply["answer"])

    async def snapshot(self, camera_id: str, width: int | None = None) -> bytes:
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
        """The supervisor's view of each worker (pid, up, restarts, CPU, RSS) with the cameras it serves and
        their states as last polled; a worker that is down has all of them "worker_down"."""
        described = self._directory.describe()
        out = []
        for index, (worker, known) in enumerate(zip(described, self._known, strict=False)):
            serving = len(self._placement.serving[index]) if index < len(self._placement.serving) else 0
            states: dict[str, int] = {}
            if worker.get("up"):
                for state in known.cameras.values():
                    states[state[0]] = states.get(state[0], 0) + 1
            elif serving:
                states = {WORKER_DOWN["state"]: serving}
            out.append({**worker, "cameras": serving, "states": states})
        return out

    def live(self, camera_id: str) -> dict[str, str]:
        index = self._placement.route.get(camera_id)
        if index is None:
            return UNKNOWN
        if self._directory.endpoint(index) is None:
            return WORKER_DOWN
        found = self._known[index].cameras.get(camera_id)
        return {"state": found[0], "codec": found[1]} if found else UNKNOWN

    async def camera_status(self, camera_id: str) -> dict[str, Any] | None:
        index = self._placement.route.get(camera_id)
        if index is None:
            return None
        try:
            _, status = await self._call(index, f"/status/{quote(camera_id, safe='')}", None)
        except UnknownCamera:
            return None
        except WorkerUnavailable:
            return {**WORKER_DOWN, "worker": index}
        return {**status, "worker": index}

    async def samples(self, cameras: Sequence[str] = ()) -> list[Sample]:
        query = urlencode([("camera", c) for c in cameras if c in self._placement.route])
        calls = [self._call(i, f"/sample?{query}", None) for i in range(len(self._known))]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return [r[1] for r in results if isinstance(r, tuple)]  # a worker that is down has no sample

    # --- registry deltas (signaling/registry_sync.py) ---
    async def cameras_changed(self, changed: Sequence[Camera], removed: Sequence[str]) -> None:
        """Send each change only to the workers that run the camera (a new camera: to its owner)."""
        for camera in changed:
            self._placement.add(camera.id)
            for index in self._placement.servers(camera.id):
                self._outbox[index].add(put=[camera.id])
        for camera_id in removed:
            # a camera this front never placed (registered and removed around a restart) may still run on the
            # worker that loaded it at boot: its ring owner
            for index in self._placement.remove(camera_id) or [self._placement.owner(camera_id)]:
                self._outbox[index].add(remove=[camera_id])
        await self._flush_all()

    # --- runtime worker count ---
    async def resize(self, count: int) -> dict[str, Any]:
        """Run `count` workers, moving only the cameras whose ring owner changes, each started on its new
        worker before it is stopped on the old one. Viewers of a moved camera on its old worker are ended
        when it stops there; a new offer already goes to the new worker, whose GOP cache is warm."""
        if count < 1:
            raise ValueError("at least one worker")
        async with self._resizing:
            before = self._placement.count
            if count > before:
                try:
                    await self._directory.resize(count)  # new workers boot with their share of the new ring
                except (OSError, TimeoutError, ValueError) as exc:
                    await self._directory.resize(before)  # nothing moved yet: back to where we were
                    raise WorkerUnavailable(f"new workers did not start: {exc!r}") from None
                self._known.extend(_Known() for _ in range(before, count))
                self._outbox.extend(_Outbox() for _ in range(before, count))
            started = time.monotonic()
            moves = self._placement.begin(count)
            for move in moves:
                self._outbox[move.target].add(put=[move.camera_id])
            await self._flush_all()
            late = await self._await_live(moves, started + HANDOVER_S)
            self._placement.commit(moves)
            for move in moves:
                if move.source < count:
                    self._outbox[move.source].add(remove=[move.camera_id])
            if count < before:
                await self._directory.resize(count)
                del self._known[count:], self._outbox[count:]
            await self._flush_all()
            took = time.monotonic() - started
            log.info("workers %d -> %d: %d cameras moved in %.1f s (%d not streaming)", before, count, len(moves),
                     took, len(late))  # fmt: skip
            return {"workers": count, "moved": len(moves), "handover_s": round(took, 2), "not_streaming": late}

    async def _await_live(self, moves: list[Move], deadline: float) -> list[str]:
        """Wait until every moving camera that has a picture on its old worker has one on its new worker
        (as the polls report); returns those still without one at the deadline."""
        while True:
            waiting = [m.camera_id for m in moves if self._has_picture(m.source, m.camera_id)
                       and not self._has_picture(m.target, m.camera_id)]  # fmt: skip
            if not waiting or time.monotonic() >= deadline:
                return waiting
            await asyncio.sleep(0.05)

    def _has_picture(self, index: int, camera_id: str) -> bool:
        state = self._known[index].cameras.get(camera_id) if index < len(self._known) else None
        return bool(state and state[2])

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
            error = from_wire(reply if isinstance(reply, dict) else {})
            if response.status >= 500:
                log.error("worker %d failed on %s: %s", index, path, error)  # its own log has the stack
            raise error
        return endpoint.generation, reply

    async def _flush_all(self) -> None:
        async with self._flushing:  # one sender at a time: deltas to a worker stay in order
            await asyncio.gather(*(self._flush(i) for i in range(len(self._outbox))))

    async def _flush(self, index: int) -> None:
        outbox = self._outbox[index]
        while outbox.put or outbox.remove:
            put = sorted(outbox.put)[:MAX_IDS_PER_CALL]
            remove = sorted(outbox.remove)[: MAX_IDS_PER_CALL - len(put)]
            try:
                await self._call(index, "/cameras", {"put": put, "remove": remove})
            except SessionError as exc:
                log.debug("worker %d: registry delta not delivered (%s); will retry", index, exc)
                return
            outbox.put.difference_update(put)  # what changed meanwhile was re-added and is sent next round
            outbox.remove.difference_update(remove)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(i) for i in range(len(self._known))))
            await self._flush_all()
            await asyncio.sleep(POLL_S)

    async def _poll(self, index: int) -> None:
        sent = time.monotonic()
        known = self._known[index]
        try:
            generation, state = await self._call(index, f"/state?cursor={quote(known.cursor)}", None)
        except SessionError:
            if index < len(self._known) and self._directory.endpoint(index) is None:
                self._known[index] = _Known(-1)  # down: its sessions and states are gone with it
            return
        if index >= len(self._known):  # the worker was removed while we asked
            return
        known = self._current(index, generation)
        if state["full"]:
            self._replace(known, state, sent, index)
            self._reconcile(index)
        else:
            self._apply(known, state, index)
        known.cursor = str(state["cursor"])

    def _replace(self, known: _Known, state: dict[str, Any], sent: float, index: int) -> None:
        listed = {str(s["id"]): {**s, "worker": index} for s in state["sessions"]}
        for session_id, born in list(known.born.items()):
            if born >= sent and session_id not in listed:  # too new for this answer: keep it
                listed[session_id] = known.sessions.get(session_id, {"id": session_id, "worker": index})
            elif born < sent and session_id not in listed:
                known.born.pop(session_id, None)
        known.sessions = listed
        known.cameras = {cid: (st[0], st[1], bool(st[2])) for cid, st in state["cameras"].items()}

    @staticmethod
    def _apply(known: _Known, state: dict[str, Any], index: int) -> None:
        for session in state["sessions"]:
            known.sessions.setdefault(str(session["id"]), {**session, "worker": index})
        for session_id in state["ended"]:
            known.sessions.pop(session_id, None)
            known.born.pop(session_id, None)
        known.cameras.update((cid, (st[0], st[1], bool(st[2]))) for cid, st in state["cameras"].items())
        for camera_id in state["gone"]:
            known.cameras.pop(camera_id, None)

    def _reconcile(self, index: int) -> None:
        """After a full answer (a worker's first, or after a restart): what it runs vs what it should."""
        if index >= len(self._placement.serving):
            return
        should, runs = self._placement.serving[index], set(self._known[index].cameras)
        # an extra camera the front has not heard of yet is left alone: the registry sync brings it (or its
        # removal) within a poll
        missing, extra = should - runs, {c for c in runs - should if c in self._placement.route}
        if missing or extra:
            log.info("worker %d: reconciling %d missing, %d extra cameras", index, len(missing), len(extra))
            self._outbox[index].add(put=missing, remove=extra)
