"""Live views: which WHEP session was opened with which token, for which incident, camera and operator.

The registry is how access is taken back server-side: ending a view closes its WebRTC session on the
worker (`WorkerClient.close`), so a closed incident or a revoked token stops the picture at once, not at
the viewer's next reconnect. `on_end` is called exactly once per view (the audit record with duration).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class View:
    session_id: str
    camera: str
    jti: str
    incident: str
    operator: str
    agency: str
    client_id: str
    basis: str
    exp: float
    remote: str | None
    started: float = field(default_factory=time.monotonic)

    @property
    def duration_s(self) -> float:
        return round(time.monotonic() - self.started, 3)


CloseSession = Callable[[str], Awaitable[None]]
OnEnd = Callable[[View, str], None]


class ViewRegistry:
    def __init__(self, close_session: CloseSession, on_end: OnEnd) -> None:
        self._close_session = close_session
        self._on_end = on_end
        self._views: dict[str, View] = {}
        self._by_token: Counter[str] = Counter()  # live views per jti and per client (the quotas read them)
        self._by_client: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._views)

    def add(self, view: View) -> None:
        old = self._views.get(view.session_id)
        if old is not None:
            self._forget(old)
        self._views[view.session_id] = view
        self._by_token[view.jti] += 1
        self._by_client[view.client_id] += 1

    def counts(self, jti: str, client_id: str) -> tuple[int, int]:
        """(live views opened with this token, live views of this client)."""
        return self._by_token[jti], self._by_client[client_id]

    def _forget(self, view: View) -> None:
        for counter, key in ((self._by_token, view.jti), (self._by_client, view.client_id)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def get(self, session_id: str) -> View | None:
        return self._views.get(session_id)

    def all(self) -> list[View]:
        return list(self._views.values())

    async def end(self, session_id: str, reason: str, close: bool = True) -> View | None:
        """End one view: forget it first (so it is ended once), then close the session on the worker."""
        view = self._views.pop(session_id, None)
        if view is None:
            return None
        self._forget(view)
        if close:
            try:
                await self._close_session(session_id)
            except Exception as exc:  # already gone on the worker (peer left): the view is over all the same
                log.debug("closing session %s: %s", session_id, exc)
        self._on_end(view, reason)
        return view

    async def end_where(self, predicate: Callable[[View], bool], reason: str) -> int:
        """End every view matching `predicate`, concurrently (100 views close in one round trip)."""
        doomed = [v.session_id for v in self._views.values() if predicate(v)]
        if doomed:
            await asyncio.gather(*(self.end(s, reason) for s in doomed))
        return len(doomed)
