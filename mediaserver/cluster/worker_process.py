"""A media worker process: `python -m mediaserver.cluster.worker_process --index I --workers N --db DB --settings JSON`.

Started by the supervisor (supervisor.py), never by hand. It ingests the registry's cameras that the hash
ring gives to worker I of N (N: the worker count when it starts; the front sends what changes after as
deltas), serves the internal RPC (worker_rpc.py) on 127.0.0.1 on a port the OS picks, and prints
`READY <port>` on stdout once it listens. The RPC secret comes in the environment (not argv, which every
local user can read in `ps`). It dies with its parent (PR_SET_PDEATHSIG) and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys

from aiohttp import web

from mediaserver.cluster.hashring import worker_index, worker_name, worker_ring
from mediaserver.cluster.worker_rpc import SECRET_ENV, create_rpc_app
from mediaserver.registry import Registry
from mediaserver.worker import Worker, WorkerSettings

PARENT_ENV = "GOLDENTIME_PARENT_PID"
log = logging.getLogger("goldentime.worker")


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies; exit now if the parent is already gone (the race between
    fork and prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        sys.exit(0)


def load_cameras(worker: Worker, registry: Registry, index: int, count: int) -> int:
    """Start ingest for this worker's share of the registry (its part of the ring of `count` workers);
    returns how many cameras it took. Later changes come from the front as deltas (RPC `/cameras`)."""
    ring = worker_ring(count)
    mine = [camera for camera in registry.list() if worker_index(ring, camera.id) == index]
    for camera in mine:
        worker.add_camera(camera)
    return len(mine)


async def run(index: int, count: int, db: str, settings: WorkerSettings, secret: str) -> None:
    name = worker_name(index)
    worker = Worker(settings, name)  # the name picks its recording ring: a restart recovers its own
    registry = Registry(db)  # kept open: deltas name cameras by id, their rows are read here
    taken = load_cameras(worker, registry, index, count)
    runner = web.AppRunner(create_rpc_app(worker, secret, name, registry.get_many), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    log.info("%s (pid %d): %d cameras, RPC on 127.0.0.1:%d", name, os.getpid(), taken, port)
    print(f"READY {port}", flush=True)
    os.dup2(2, 1)  # nobody reads our stdout after READY: a stray print must not fill the pipe and block us
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()
        await worker.stop()
        registry.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediaserver.cluster.worker_process")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--settings", default="{}", help="WorkerSettings as JSON")
    args = parser.parse_args(argv)
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        print(f"{SECRET_ENV} is not set: workers are started by the supervisor", file=sys.stderr)
        return 2
    settings = WorkerSettings.from_dict(json.loads(args.settings))
    import uvloop

    uvloop.run(run(args.index, args.workers, args.db, settings, secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
