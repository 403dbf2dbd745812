"""What a refusal costs the audit log: bounded, per source address.

Anyone can be refused without credentials, so refusals must not be a way to fill the disk. Two bounds:

- every text field of a refusal record is cut to `MAX_FIELD` characters (the original length is kept);
- each source address has a token bucket (`burst` records at once, `rate` per second after that). A refusal
  over the limit is not written on its own but counted; once per `summary_s` each source with suppressed
  refusals gets one `access.suppressed` record (count, first/last time, counts by status and error). Every
  decision is still accounted for, and a flood costs one record per source per interval. At most `max_sources`
  addresses are tracked; beyond that they share the bucket of the source "*".

Behind a reverse proxy every request comes from the proxy's address: the limit is then shared by everyone.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from signaling.incidents import rfc3339

MAX_FIELD = 256
MAX_KINDS = 16  # distinct error strings counted per summary; the rest count as "other"


def cap(value: Any, limit: int = MAX_FIELD) -> Any:
    """A string cut to `limit` characters, marked with the original length; anything else as it is."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}…[{len(value)} chars]"
    return value


@dataclass(frozen=True, slots=True)
class RefusalLimits:
    burst: float = 20.0
    rate: float = 1.0  # refusal records per second per source, after the burst
    summary_s: float = 10.0
    max_sources: int = 4096


@dataclass(slots=True)
class _Source:
    tokens: float
    at: float
    suppressed: int = 0
    first: float = 0.0
    last: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class RefusalLimiter:
    def __init__(self, limits: RefusalLimits | None = None) -> None:
        self.limits = limits or RefusalLimits()
        self._sources: dict[str, _Source] = {}
        self._flushed = time.monotonic()

    def admit(self, remote: str | None, status: int, error: str, now: float | None = None) -> bool:
        """True: write this refusal's record. False: it was counted for the source's next summary."""
        now = time.monotonic() if now is None else now
        source = self._source(remote, now)
        if source.tokens >= 1.0:
            source.tokens -= 1.0
            return True
        self._suppress(source, status, error)
        return False

    def count(self, remote: str | None, status: int, error: str, now: float | None = None) -> None:
        """Count a refusal for the source's next summary, never as a record of its own (the refusals of a
        lockout: the lockout itself was recorded once, signaling/logins.py)."""
        self._suppress(self._source(remote, time.monotonic() if now is None else now), status, error)

    def _source(self, remote: str | None, now: float) -> _Source:
        lim = self.limits
        key = remote or "unknown"
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= lim.max_sources:
                key = "*"
                source = self._sources.get(key)
            if source is None:
                source = self._sources[key] = _Source(lim.burst, now)
        source.tokens = min(lim.burst, source.tokens + (now - source.at) * lim.rate)
        source.at = now
        return source

    @staticmethod
    def _suppress(source: _Source, status: int, error: str) -> None:
        wall = time.time()
        if source.suppressed == 0:
            source.first = wall
        source.suppressed += 1
        source.last = wall
        source.statuses[str(status)] += 1
        kind = error if error in source.errors or len(source.errors) < MAX_KINDS else "other"
        source.errors[kind] += 1

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self._flushed >= self.limits.summary_s

    def flush(self, now: float | None = None) -> list[dict[str, Any]]:
        """The summary records owed (audit fields), one per source with suppressed refusals; forgets sources
        whose bucket has refilled."""
        now = time.monotonic() if now is None else now
        self._flushed = now
        out: list[dict[str, Any]] = []
        for key, s in list(self._sources.items()):
            if s.suppressed:
                out.append({
                    "remote": key, "reason": f"{s.suppressed} refusals over the per-source rate limit",
                    "detail": {"count": s.suppressed, "first": rfc3339(s.first), "last": rfc3339(s.last),
                               "statuses": dict(s.statuses), "errors": dict(s.errors)},
                })  # fmt: skip
                s.suppressed, s.statuses, s.errors = 0, Counter(), Counter()
            elif s.tokens + (now - s.at) * self.limits.rate >= self.limits.burst:
                del self._sources[key]
        return out
