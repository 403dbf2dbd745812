"""Runs N media worker processes (worker_main.py) and keeps them running.

A worker that exits for any reason (a crash, `kill -9`, the OOM killer) is started again at once with the
same index, so the hash ring gives it the same cameras; the other workers are never touched. A worker that
keeps dying soon after start is restarted with exponential backoff (capped) instead of in a tight loop.
Each boot gets a fresh random RPC secret; the front reads the current port and generation through
`endpoint()`, so sessions of a dead generation are known to be gone.

`resize(n)` adds workers at runtime (each new one boots with its share of the ring of n) or stops the
highest-numbered ones; moving cameras without a gap is the front's part (signaling/placement.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass, field

from mediaserver.cluster.hashring import worker_name
from mediaserver.cluster.worker_process import PARENT_ENV
from mediaserver.cluster.worker_rpc import SECRET_ENV
from mediaserver.worker import WorkerSettings

log = logging.getLogger("goldentime.supervisor")

READY_TIMEOUT_S = 30.0
STABLE_AFTER_S = 10.0  # a worker that ran this long crashed "once": restart without backoff
RESTART_DELAY_S = 0.1
RESTART_CAP_S = 5.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str  # http://127.0.0.1:PORT
    generation: int  # increases on every (re)start of this worker


@dataclass(slots=True)
class WorkerProcess:
    index: int
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None
    generation: int = 0
    restarts: int = 0
    started_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> dict[str, object]:
        pid = self.proc.pid if self.proc and self.proc.returncode is None else None
        return {"index": self.index, "name": worker_name(self.index), "pid": pid, "up": self.port is not None,
                "generation": self.generation, "restarts": self.restarts, **process_usage(pid)}  # fmt: skip


def process_usage(pid: int | None) -> dict[str, float]:
    """CPU seconds and resident bytes of a child, read from /proc: answers even for a worker that is hung."""
    if pid is None:
        return {}
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # the command name may hold spaces
        with open(f"/proc/{pid}/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return {}
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (fields 14, 15 of stat)
    return {"cpu_seconds": cpu, "resident_bytes": pages * _PAGE_SIZE}


class Supervisor:
    def __init__(self, count: int, db: str, settings: WorkerSettings, python: str = sys.executable) -> None:
        self.count = count
        self.db = db
        self.settings = settings
        self.python = python
        self.secret = secrets.token_urlsafe(32)  # per boot: a restarted front invalidates old workers
        self.workers = [WorkerProcess(i) for i in range(count)]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._resizing = asyncio.Lock()

    async def start(self) -> None:
        """Start every worker; returns once all answer (or raises TimeoutError)."""
        self._tasks = [asyncio.create_task(self._keep(w), name=f"supervise:{w.index}") for w in self.workers]
        async with asyncio.timeout(READY_TIMEOUT_S):
            await asyncio.gather(*(w.ready.wait() for w in self.workers))

    async def resize(self, count: int) -> None:
        """Run `count` workers: new ones are started (returns once they answer), the highest-numbered ones
        beyond `count` are stopped. Indices stay 0..count-1, so ring members stay `worker-0..count-1`."""
        if count < 1:
            raise ValueError("at least one worker")
        async with self._resizing:
            self.count = count  # a worker (re)started from now on boots with its share of the new ring
            if count > len(self.workers):
                new = [WorkerProcess(i) for i in range(len(self.workers), count)]
                self.workers.extend(new)
                self._tasks.extend(asyncio.create_task(self._keep(w), name=f"supervise:{w.index}") for w in new)
                async with asyncio.timeout(READY_TIMEOUT_S):
                    await asyncio.gather(*(w.ready.wait() for w in new))
            elif count < len(self.workers):
                gone, tasks = self.workers[count:], self._tasks[count:]
                del self.workers[count:], self._tasks[count:]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.gather(*(_terminate(w.proc, 5.0) for w in gone))

    def endpoint(self, index: int) -> Endpoint | None:
        if index >= len(self.workers):
            return None
        worker = self.workers[index]
        return Endpoint(f"http://127.0.0.1:{worker.port}", worker.generation) if worker.port else None

    def up(self) -> int:
        return sum(1 for w in self.workers if w.port is not None)

    def describe(self) -> list[dict[str, object]]:
        return [w.describe() for w in self.workers]

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(_terminate(w.proc, grace) for w in self.workers if w.proc is not None))

    async def _keep(self, worker: WorkerProcess) -> None:
        delay = RESTART_DELAY_S
        while not self._stopping:
            try:
                await self._spawn(worker)
                rc = await worker.proc.wait() if worker.proc else -1
            except (OSError, TimeoutError, ValueError) as exc:
                log.error("worker %d failed to start: %s", worker.index, exc)
                await _terminate(worker.proc, 1.0)
                rc = None
            worker.port = None
            worker.ready.clear()
            if self._stopping:
                return
            ran = time.monotonic() - worker.started_at
            delay = RESTART_DELAY_S if ran > STABLE_AFTER_S else min(delay * 2, RESTART_CAP_S)
            log.warning("worker %d exited (%s) after %.1f s; restarting in %.1f s", worker.index, rc, ran, delay)
            worker.restarts += 1
            await asyncio.sleep(delay)

    async def _spawn(self, worker: WorkerProcess) -> None:
        env = {**os.environ, SECRET_ENV: self.secret, PARENT_ENV: str(os.getpid())}
        # -P: the working directory never shadows the installed package (a source checkout has no built extensions)
        argv = ["-P", "-m", "mediaserver.cluster.worker_process", "--index", str(worker.index),
                "--workers", str(self.count), "--db", self.db,
                "--settings", json.dumps(self.settings.to_dict())]  # fmt: skip
        worker.started_at = time.monotonic()
        worker.proc = await asyncio.create_subprocess_exec(self.python, *argv, stdout=asyncio.subprocess.PIPE, env=env)
        assert worker.proc.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT_S):
            while line := await worker.proc.stdout.readline():
                if line.startswith(b"READY "):
                    worker.port = int(line.split()[1])
                    worker.generation += 1
                    worker.ready.set()
                    log.info("worker %d up (pid %d, port %d)", worker.index, worker.proc.pid, worker.port)
                    return
        raise ValueError("worker exited before it was ready")


async def _terminate(proc: asyncio.subprocess.Process | None, grace: float) -> None:
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
