"""What does a flood of failed logins cost the front, and does the lockout keep it from costing scrypt?

One front (aiohttp, in this process, production hash costs: operators' scrypt 2^12, clients' 2^14) on 127.0.0.1.
Measured over HTTP: a good sign-in; wrong passwords with the lockout out of reach (every attempt runs one scrypt);
wrong passwords and client secrets against a locked account/address (no scrypt). For each: requests/s from
`--concurrency` connections, p50/p95 latency, scrypt calls, and the event loop's worst lag meanwhile (a viewer's
frames are sent from that loop). Writes results/login-flood-<date>.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS, AccessSettings
from signaling.app import create_app
from signaling.lockout import LockoutSettings

RESULTS = Path(__file__).resolve().parent / "results"
NO_HUBS: dict[str, Hub] = {}
CALLS = [0]
_real_scrypt = hashlib.scrypt


def _counting_scrypt(*args: Any, **kwargs: Any) -> bytes:
    CALLS[0] += 1
    return _real_scrypt(*args, **kwargs)


async def lag_probe(stop: asyncio.Event, worst: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        worst[0] = max(worst[0], time.perf_counter() - t0 - 0.005)


async def phase(name: str, n: int, concurrency: int, send: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    worst, stop = [0.0], asyncio.Event()
    probe = asyncio.create_task(lag_probe(stop, worst))
    calls0, left = CALLS[0], [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            t0 = time.perf_counter()
            status = await send()
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    stop.set()
    await probe
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"phase": name, "requests": n, "per_s": n / wall, "p50_ms": q[9] * 1e3, "p95_ms": q[18] * 1e3,
            "scrypt": CALLS[0] - calls0, "lag_ms": worst[0] * 1e3, "statuses": statuses}  # fmt: skip


async def measure(args: argparse.Namespace, db: Path, locked: bool) -> list[dict[str, Any]]:
    """One front; unlocked: the lockout out of reach, so every wrong attempt hashes."""
    lockout = LockoutSettings() if locked else LockoutSettings(failures=10**9, address_failures=10**9)
    app = create_app(LocalWorkerClient(Egress(NO_HUBS.get)), list, db=db, access=AccessSettings(lockout=lockout),
                     web_dir=None)  # fmt: skip
    http: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await http.start_server()
    try:
        access = http.app[ACCESS]
        access.add_operator("police-112", "kim", "operator", "correct horse battery")
        client, _ = access.add_client("police-112", "112 CAD")
        wrong_basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:x".encode()).decode()}

        async def post(body: dict[str, str]) -> int:
            async with http.post("/api/session", json=body) as res:
                return res.status

        async def basic() -> int:
            async with http.get("/api/incidents/x", headers=wrong_basic) as res:
                return res.status

        good = {"username": "kim", "password": "correct horse battery"}
        wrong = {"username": "kim", "password": "wrong password!"}
        c = args.concurrency
        if not locked:
            return [await phase("good sign-in", args.n // 10, 1, lambda: post(good)),
                    await phase("wrong password, no lockout", args.n // 4, c, lambda: post(wrong))]  # fmt: skip
        for i in range(25):
            await post({"username": f"u{i}", "password": "wrong password!"})  # locks the address
        return [await phase("wrong password, locked", args.n, c, lambda: post(wrong)),
                await phase("wrong client secret (Basic), locked", args.n, c, basic)]  # fmt: skip
    finally:
        await http.close()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    hashlib.scrypt = _counting_scrypt  # counts, the real hash still runs
    with tempfile.TemporaryDirectory() as tmp:
        return [*await measure(args, Path(tmp) / "a.db", False), *await measure(args, Path(tmp) / "b.db", True)]


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"# Login flood — {datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Machine: {os.cpu_count()} vCPU, shared; load average before: {args.load}.",
        f"Command: `python benchmarks/login_flood.py -n {args.n} --concurrency {args.concurrency}`",
        "",
        "| phase | requests | per s | p50 ms | p95 ms | scrypt runs | worst loop lag ms | statuses |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['phase']} | {r['requests']} | {r['per_s']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{r['scrypt']} | {r['lag_ms']:.1f} | {r['statuses']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per locked phase (a quarter unlocked)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(asyncio.run(run(args)), args)
    print(text)
    if not args.no_write:
        out = RESULTS / f"login-flood-{datetime.now().strftime('%Y-%m-%d-%H%M')}.md"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
