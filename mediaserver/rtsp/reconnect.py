"""Reconnect policy: exponential backoff with full jitter per camera, and one process-wide cap on
connection attempts per second so that a whole district coming back does not stampede."""

from __future__ import annotations

import asyncio
import random
import time


class Backoff:
    """Full jitter (delay uniform in [0, min(cap, base * 2**attempt)]), as in AWS's backoff study."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class RateLimiter:
    """Token bucket shared by every camera of a process: `acquire()` waits for the next free slot."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, int(rate)))
        self._tokens = self.burst
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()
        self.granted = 0

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in order
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    self.granted += 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)
