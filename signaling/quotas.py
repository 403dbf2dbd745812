"""Quotas: no one token or agency client may take what every other agency needs.

- Live views per stream token and per client, counting offers still being answered (so a burst of parallel
  POSTs cannot all slip under the cap). The defaults leave room for a real operator's video wall: 16 tiles at
  two profiles is 32 sessions, and each tile may reconnect once before its old session times out on the worker
  (64 per token); a client (one agency app, many operators) holds up to 256 of a worker's 1,000.
- Token buckets per client for minting tokens (stream and API) and for creating incidents: a burst, then a
  steady rate. A CAD system opening a few incidents a minute and a token per operator never meets them.

Every refusal is a `QuotaExceeded` (429 with Retry-After); the access layer audits it before it is raised.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from signaling.errors import QuotaExceeded


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    sessions_per_token: int = 64
    sessions_per_client: int = 256
    session_retry_s: float = 5.0  # a view ends when its viewer leaves: try again in a few seconds
    mint_burst: int = 60  # stream and API tokens per client
    mint_per_s: float = 1.0
    incident_burst: int = 20  # incidents created per client
    incident_per_s: float = 0.2


class TokenBucket:
    """`burst` actions at once, then `per_s` a second, per key."""

    MAX_KEYS = 10_000

    def __init__(self, burst: int, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.per_s, self._clock = burst, per_s, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is free (nothing taken)."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.per_s if self.per_s > 0 else float("inf")
        if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """A full bucket is the same as no bucket: drop those (keys are registered clients: few)."""
        for key in [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.per_s >= self.burst]:
            del self._buckets[key]


LiveCounts = Callable[[str, str], tuple[int, int]]  # (jti, client_id) -> (live views of the token, of the client)


class Slot:
    """An offer in flight, counted against the caps until the view starts (or the offer fails)."""

    def __init__(self, pending: Counter[str], keys: tuple[str, ...]) -> None:
        self._pending = pending
        self._keys = keys
        for key in keys:
            pending[key] += 1

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        for key in self._keys:
            self._pending[key] -= 1
            if self._pending[key] <= 0:
                del self._pending[key]
        self._keys = ()


class Quotas:
    def __init__(self, settings: QuotaSettings, live: LiveCounts) -> None:
        self.settings = settings
        self._live = live
        self._pending: Counter[str] = Counter()
        self.mint = TokenBucket(settings.mint_burst, settings.mint_per_s)
        self.incidents = TokenBucket(settings.incident_burst, settings.incident_per_s)

    def reserve_session(self, jti: str, client_id: str) -> Slot:
        """A slot for one more view with this token, or QuotaExceeded. Use as a context manager."""
        s = self.settings
        token_live, client_live = self._live(jti, client_id)
        token_key, client_key = f"token:{jti}", f"client:{client_id}"
        if token_live + self._pending[token_key] >= s.sessions_per_token:
            raise QuotaExceeded(
                "too many sessions for this token", f"at most {s.sessions_per_token} live views per token",
                s.session_retry_s,
            )  # fmt: skip
        if client_live + self._pending[client_key] >= s.sessions_per_client:
            raise QuotaExceeded(
                "too many sessions for this client", f"at most {s.sessions_per_client} live views per client",
                s.session_retry_s,
            )  # fmt: skip
        return Slot(self._pending, (token_key, client_key))

    def take_mint(self, client_id: str) -> None:
        wait = self.mint.take(client_id)
        if wait:
            raise QuotaExceeded("token rate limit", f"at most {self.settings.mint_burst} tokens at once, "
                                f"then {self.settings.mint_per_s:g} a second per client", wait)  # fmt: skip

    def take_incident(self, client_id: str) -> None:
        wait = self.incidents.take(client_id)
        if wait:
            raise QuotaExceeded("incident rate limit", f"at most {self.settings.incident_burst} incidents at once, "
                                f"then {self.settings.incident_per_s:g} a second per client", wait)  # fmt: skip
