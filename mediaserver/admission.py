"""Admission control: refuse a new viewer before taking it would degrade the viewers a worker already has.

A worker is one event loop. When it is saturated, every viewer suffers at once: frames leave late, the
hub's bounded queues overflow and slow viewers are skipped to the next keyframe, setup takes seconds. So
the decision is made on *measured* load, with a session cap only as a backstop:

- event-loop lag: how late a periodic timer fires (smoothed); the most direct sign that sends are late;
- event-loop CPU: the share of one core the loop's own thread used over the last window (smoothed). Not the
  process: transcodes run in executor threads on other cores and don't slow the loop until the cores are
  all busy, and then the lag shows it;
- drops: frames the hub or the bridge dropped for viewers that could not keep up, per second;
- sessions: a hard cap.

`LoadMonitor.check(sessions)` returns None (admit) or a `Refusal` naming the first limit crossed, how to
back off (`retry_after_s`) and the numbers, so the HTTP layer can answer 503 + Retry-After with a body an
operator can act on. Existing sessions are never touched.

Joins arrive in bursts (an incident: a whole room opens the same cameras at once), and a burst's own setup
work is what lifts the loop's lag. So `JoinQueue` queues joins instead of refusing them on a lag spike:
at most `join_concurrency` are set up at once (which caps the joins' work per loop turn), and a join whose
turn comes while the loop is late or busy waits for it to recover, until `join_deadline_s` after it arrived;
only then is it refused (`Overloaded`, 503 + Retry-After). The session cap, slow viewers' drops and a full
queue refuse at once: waiting would not change them, and drops mean existing viewers already suffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from mediaserver.errors import Overloaded


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    max_sessions: int = 1000  # backstop; the measured limits below should refuse first
    max_loop_lag_ms: float = 40.0  # a frame interval at 25 fps: beyond it, sends are visibly late
    max_cpu: float = 0.90  # share of one core used by the event loop's thread
    max_drops_per_s: float = 5.0  # frames dropped for slow viewers, per second, over the window
    retry_after_s: int = 5
    interval_s: float = 0.05  # lag probe period
    window_s: float = 1.0  # CPU and drop rates are measured over this window
    smoothing: float = 0.2  # EWMA weight of a new sample (lag per probe, CPU and drops per window)
    join_concurrency: int = 16  # joins set up at once (offer to answer): bounds their work per loop turn
    join_queue: int = 1024  # joins waiting for their turn, at most
    join_deadline_s: float = 2.0  # a join not started within this (queue + lag/CPU wait) is refused


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    retry_after_s: int
    load: dict[str, Any] = field(default_factory=dict)


class LoadMonitor:
    """Measures the worker's load on its own loop; `check()` decides whether one more viewer fits.

    `dropped()` returns a running total of frames dropped for slow viewers (it may go down when sessions
    end; only increases count)."""

    def __init__(self, settings: AdmissionSettings | None = None, dropped: Callable[[], int] | None = None) -> None:
        self.settings = settings or AdmissionSettings()
        self._dropped = dropped or (lambda: 0)
        self.lag_ms = 0.0  # smoothed lateness of the probe timer
        self.cpu = 0.0  # smoothed share of one core used by the loop thread
        self.drops_per_s = 0.0  # smoothed
        self.refused = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._probe(), name="load-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _probe(self) -> None:
        s = self.settings
        # thread_time() here is the loop thread's own CPU: this coroutine always runs on it
        window_wall, window_cpu, window_drops = time.monotonic(), time.thread_time(), self._dropped()
        while True:
            due = time.monotonic() + s.interval_s
            await asyncio.sleep(s.interval_s)
            now = time.monotonic()
            self.lag_ms = _ewma(self.lag_ms, 1000 * max(0.0, now - due), s.smoothing)
            if now - window_wall >= s.window_s:
                cpu, drops = time.thread_time(), self._dropped()
                self.cpu = _ewma(self.cpu, (cpu - window_cpu) / (now - window_wall), s.smoothing * 2)
                rate = max(0, drops - window_drops) / (now - window_wall)
                self.drops_per_s = _ewma(self.drops_per_s, rate, s.smoothing * 2)
                window_wall, window_cpu, window_drops = now, cpu, drops

    def load(self, sessions: int) -> dict[str, Any]:
        return {
            "sessions": sessions,
            "loop_lag_ms": round(self.lag_ms, 1),
            "cpu": round(self.cpu, 3),
            "drops_per_s": round(self.drops_per_s, 2),
        }

    def refusal(self, sessions: int) -> Refusal | None:
        """What refuses a join at once: the session cap, or viewers already being dropped for falling behind."""
        s = self.settings
        if sessions >= s.max_sessions:
            return self._refuse(f"session cap reached ({s.max_sessions})", sessions)
        if self.drops_per_s > s.max_drops_per_s:
            return self._refuse(f"dropping {self.drops_per_s:.1f} frames/s for slow viewers", sessions)
        return None

    def busy(self) -> str | None:
        """Why the loop cannot take a join's work right now (late or busy), or None: a join may wait for it."""
        s = self.settings
        if self.lag_ms > s.max_loop_lag_ms:
            return f"event loop lag {self.lag_ms:.0f} ms > {s.max_loop_lag_ms:.0f} ms"
        if self.cpu > s.max_cpu:
            return f"event loop CPU {100 * self.cpu:.0f} % > {100 * s.max_cpu:.0f} % of a core"
        return None

    def check(self, sessions: int) -> Refusal | None:
        """None if one more session fits now, else why not."""
        refusal = self.refusal(sessions)
        if refusal is not None:
            return refusal
        reason = self.busy()
        return None if reason is None else self._refuse(reason, sessions)

    def _refuse(self, reason: str, sessions: int) -> Refusal:
        self.refused += 1
        return Refusal(reason, self.settings.retry_after_s, self.load(sessions))


class JoinQueue:
    """Joins in arrival order, `join_concurrency` at a time, each admitted or refused within its deadline."""

    def __init__(self, monitor: LoadMonitor) -> None:
        self.monitor = monitor
        self.settings = monitor.settings
        self.waiting = 0  # joins queued for a slot
        self.active = 0  # joins holding a slot (not yet sessions)
        self.waited_ms_max = 0.0  # the longest wait of an admitted join (a gauge for benchmarks and metrics)
        self._slots: asyncio.Semaphore | None = None  # made on the running loop

    @asynccontextmanager
    async def slot(self, sessions: Callable[[], int]) -> AsyncIterator[None]:
        """Hold a join slot while the session is set up; raises Overloaded if refused. `sessions()`: how many
        sessions the worker has now (those being set up are added)."""
        s, arrived = self.settings, time.monotonic()
        self._raise(self.monitor.refusal(sessions() + self.active))
        if self.waiting >= s.join_queue:
            self._raise(self.monitor._refuse(f"join queue full ({s.join_queue} waiting)", sessions()))
        await self._acquire(arrived + s.join_deadline_s, sessions)
        self.active += 1
        try:
            await self._wait_loop(arrived + s.join_deadline_s, sessions)
            self._raise(self.monitor.refusal(sessions() + self.active - 1))  # the cap may be reached meanwhile
            self.waited_ms_max = max(self.waited_ms_max, 1000 * (time.monotonic() - arrived))
            yield
        finally:
            self.active -= 1
            assert self._slots is not None
            self._slots.release()

    async def _acquire(self, deadline: float, sessions: Callable[[], int]) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.join_concurrency)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            s = self.settings
            reason = f"no join slot within {s.join_deadline_s:g} s ({self.waiting} joins waiting)"
            self._raise(self.monitor._refuse(reason, sessions()))
        finally:
            self.waiting -= 1

    async def _wait_loop(self, deadline: float, sessions: Callable[[], int]) -> None:
        """Until the loop can take the join's work, or the deadline (then refused with the reason)."""
        while (reason := self.monitor.busy()) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._raise(self.monitor._refuse(reason, sessions()))
            await asyncio.sleep(min(self.settings.interval_s, left))

    @staticmethod
    def _raise(refusal: Refusal | None) -> None:
        if refusal is not None:
            raise Overloaded(refusal.reason, refusal.retry_after_s, refusal.load)


def _ewma(old: float, new: float, weight: float) -> float:
    weight = min(1.0, weight)
    return old + weight * (new - old)
