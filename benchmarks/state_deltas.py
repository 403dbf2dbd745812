"""What the front's caches and the registry follow-up cost at city scale: full answers against deltas.

    .venv/bin/python benchmarks/state_deltas.py [--cameras 10000] [--changed 0.01] [--repeat 20]

Worker side: one Worker holding N cameras (ingest objects that are not started, half streaming with a
cached keyframe: a steady city), answering the front's state poll (worker_rpc.StateFeed) in full (what every
poll sent before deltas) and as a delta (nothing changed, or a fraction changed). Front side: parsing and
applying that answer. Registry: the per-second change marker, the read of one change, and a no-op
re-import of every camera (writes nothing, bumps nothing). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.cluster.remote_worker import RemoteWorkerClient, _Known
from mediaserver.cluster.worker_rpc import StateFeed
from mediaserver.hub import Hub
from mediaserver.ingest import CameraIngest, State
from mediaserver.registry import Registry, make_camera
from mediaserver.rtsp.client import Source
from mediaserver.rtsp.reconnect import RateLimiter
from mediaserver.worker import Worker


class Unit:
    def __init__(self, keyframe: bool) -> None:
        self.data, self.pts, self.keyframe = b"\0" * 1000, 0, keyframe


def steady_worker(count: int) -> Worker:
    """N cameras as a worker holds them, without sockets: ingest objects never started."""
    worker = Worker()
    limiter = RateLimiter(50)
    for i in range(count):
        cid = f"cam-{i:05d}"
        hub = Hub(cid)
        ingest = CameraIngest(hub, Source(f"rtsp://127.0.0.1/{cid}"), limiter)
        if i % 2 == 0:
            ingest.state = State.STREAMING
            hub.publish(Unit(True))
        else:
            ingest.state = State.BACKOFF
        worker.hubs[cid], worker.ingests[cid] = hub, ingest
    return worker


def best_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def front_apply(body: str) -> None:
    state = json.loads(body)
    known = _Known()
    RemoteWorkerClient._apply(known, state, 0)


def flip(worker: Worker, fraction: float) -> None:
    step = max(1, int(1 / fraction)) if fraction > 0 else 0
    if step:
        for i, ingest in enumerate(worker.ingests.values()):
            if i % step == 0:
                ingest.state = State.CONNECTING if ingest.state != State.CONNECTING else State.STREAMING


def poll_costs(count: int, changed: float, repeat: int) -> list[tuple[str, float, int, float]]:
    worker = steady_worker(count)
    feed = StateFeed(worker)
    rows = []
    full = json.dumps(feed.poll(None))
    rows.append(("full (every poll before deltas)", best_ms(lambda: json.dumps(feed.poll(None)), repeat), len(full),
                 best_ms(lambda: front_apply(full), repeat)))  # fmt: skip
    cursor = json.loads(json.dumps(feed.poll(None)))["cursor"]

    def delta() -> str:
        nonlocal cursor
        body = feed.poll(cursor)
        cursor = body["cursor"]
        return json.dumps(body)

    steady = delta()
    rows.append(
        ("delta, nothing changed", best_ms(delta, repeat), len(steady), best_ms(lambda: front_apply(steady), repeat))
    )

    def delta_with_changes() -> str:
        flip(worker, changed)
        return delta()

    some = delta_with_changes()
    label = f"delta, {changed:.0%} of cameras changed state"
    rows.append((label, best_ms(delta_with_changes, repeat), len(some), best_ms(lambda: front_apply(some), repeat)))
    return rows


def registry_costs(count: int, repeat: int) -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "r.db")
        urls = [f"rtsp://u:p@10.0.{i // 250}.{i % 250}/s" for i in range(count)]
        cameras = [make_camera(f"cam-{i:05d}", f"Camera {i}", "", 37.5, 127.0, url) for i, url in enumerate(urls)]
        t0 = time.perf_counter()
        registry.upsert(cameras)
        first_import = 1000 * (time.perf_counter() - t0)
        revision = registry.revision()
        t0 = time.perf_counter()
        registry.upsert(cameras)
        again = 1000 * (time.perf_counter() - t0)
        assert registry.revision() == revision
        registry.add(make_camera("cam-00007", "Renamed", "Jung-gu", 37.5, 127.0, "rtsp://h/x"))
        rows = [
            (f"import {count:,} cameras", first_import),
            (f"re-import the same {count:,} (no revision change)", again),
            ("change marker: revision()", best_ms(registry.revision, repeat * 50)),
            ("read one change: changes(since)", best_ms(lambda: registry.changes(revision), repeat)),
            (f"read everything: list() ({count:,})", best_ms(registry.list, repeat)),
        ]
        registry.close()
    return rows


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"- machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} "
          f"{platform.release()}; load average at start {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"- command: `python benchmarks/state_deltas.py --cameras {args.cameras} --changed {args.changed} "
          f"--repeat {args.repeat}` (best of {args.repeat})\n")  # fmt: skip
    print(f"State poll of one worker holding {args.cameras:,} cameras (the front polls every worker twice a second):\n")
    print("| answer | worker: build + JSON, ms | bytes | front: parse + apply, ms |")
    print("| --- | --- | --- | --- |")
    for label, worker_ms, size, front_ms in poll_costs(args.cameras, args.changed, args.repeat):
        print(f"| {label} | {worker_ms:.2f} | {size:,} | {front_ms:.2f} |")
    print(f"\nRegistry of {args.cameras:,} cameras (SQLite, WAL; the front reads the marker once a second):\n")
    print("| operation | ms |")
    print("| --- | --- |")
    for label, ms in registry_costs(args.cameras, args.repeat):
        print(f"| {label} | {ms:.3f} |")
    print(f"\n- load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
