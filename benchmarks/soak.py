"""Soak: always-on cameras on `mediaserver serve --workers 2` for a long run, 10 % of them dropping and
returning every minute, a few WebRTC viewers on healthy cameras, and one worker killed with SIGKILL mid-run.

    .venv/bin/python benchmarks/soak.py                    # the full run: 1,000 cameras, 30 minutes
    .venv/bin/python benchmarks/soak.py --minutes 3        # a short check

The farm (camfarm.py, TCP interleaved, 15 fps H.264, `--drop 0.1:60`: a tenth of the cameras refuse
connections for 5 s in every minute, each at its own phase) feeds a fresh registry imported from the farm's
CSV. An agency client (HTTP API: /oauth/token, an incident around each viewed camera, a stream token) opens
`--viewers` aiortc WHEP viewers on cameras that never drop, all held by workers other than the one to be
killed, so they show whether the rest of the node carries on. At `--kill-at` of the run the worker
`--kill-worker` (its pid from /ops/workers) gets SIGKILL; the harness then polls until every one of its
never-dropping cameras streams again.

Every `--sample` seconds: RSS and PSS of the server's processes (/proc), their CPU, cameras by state
(/metrics), each camera's streaming flag (/metrics?camera=..., 100 per scrape) against what the farm's fault
schedule says should be up (a dropping camera is expected back `--grace` s after it returns, the backoff's
worst case), reconnect attempts per worker (goldentime_reconnects_total), and each viewer's decoded fps.
A camera is stuck at the end when it should stream and did not in either of the last two samples.

Prints one JSON line per sample (`SAMPLE {...}`) and per event; `--from-log FILE` re-renders the report.
Writes benchmarks/results/soak-<date>.md and .png (soak_report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # viewers.py

from camfarm import faults_from
from camfarm import parse_args as farm_parse_args
from lib.camfarm_measure import cpu_by_pid, machine, memory, stall_us, tree
from lib.camfarm_proc import RunningFarm, camfarm, python_die_with_parent
from lib.camfarm_rtsp import Faults
from lib.soak_api import Api, Viewer
from ramp import client_header, free_port, registry

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PLAIN_FAULTS = ("silent", "garbage", "refuse_auth")  # cameras with these never stream: not expected up
Point = tuple[float, float]  # lon, lat


@dataclass
class Sample:
    t: float  # seconds since the soak began
    rss_mib: float  # all server processes (front + workers), summed
    pss_mib: float
    rss_by_process: dict[str, float]  # /metrics goldentime_worker_resident_bytes, MiB, by worker label
    cpu_pct: float  # % of one core over the interval, all server processes
    states: dict[str, int]  # goldentime_cameras by state
    should_up: int  # cameras the farm's schedule says should stream now
    not_up: list[str]  # of those, the ones not streaming
    reconnect_rate: dict[str, float]  # worker -> connection attempts after a camera's first, per s
    viewer_fps: list[float]
    restarts: int
    farm_dropped: int  # connections the farm ended or refused for dropping cameras (since it started)
    stall_ms: int = -1  # machine-wide memory stall (PSI memory "full") during the interval: it stops everyone


@dataclass
class Kill:
    t: float
    worker: int
    pid: int
    watched: int  # the worker's never-dropping cameras
    worker_up_s: float | None  # SIGKILL -> the supervisor reports the worker up again
    streaming_s: float | None  # SIGKILL -> every watched camera streams again
    streaming_before: int
    curve: list[tuple[float, int]] = field(default_factory=list)  # (s after SIGKILL, watched cameras streaming)


@dataclass
class Meta:
    cameras: int
    workers: int
    minutes: float
    farm: str
    load: str
    argv: list[str]
    reconnect_cap: float | None  # per worker, attempts/s (from the workers' --settings)
    viewers: list[str] = field(default_factory=list)
    started: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--cameras", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--drop", default="0.1:60", help="camfarm.py --drop FRAC:PERIOD[:DOWN]")
    p.add_argument("--viewers", type=int, default=4)
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--kill-at", type=float, default=0.5, help="fraction of the run at which to kill (0: no kill)")
    p.add_argument("--kill-worker", type=int, default=1)
    p.add_argument("--kill-timeout", type=float, default=60.0)
    p.add_argument("--grace", type=float, default=35.0, help="seconds a returned camera may take to stream")
    p.add_argument("--settle-timeout", type=float, default=120.0)
    p.add_argument("--farm-procs", type=int, default=1)
    p.add_argument("--farm-args", default="", help="extra camfarm.py arguments")
    p.add_argument("--server-args", default="", help="extra `mediaserver serve` arguments")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="")
    p.add_argument("--logs", type=Path, help="keep the server log here (default: a temporary directory)")
    p.add_argument("--from-log", type=Path, help="only re-render the report from a previous run's printed lines")
    return p.parse_args(argv)


# --- the camera schedule --------------------------------------------------------------------------------------


def camera_number(camera_id: str) -> int:
    return int(camera_id.rsplit("-", 1)[1])


def should_stream(faults: Faults, cam: int, now: float, grace: float) -> bool:
    """The camera is up and has been long enough for the server's backoff to have found it."""
    if any(faults.has(mode, cam) for mode in PLAIN_FAULTS):
        return False
    return faults.up_for(cam, now) >= grace


# --- the server -------------------------------------------------------------------------------------------------


@contextmanager
def server(db: Path, port: int, args: argparse.Namespace, log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "mediaserver.cli", "serve", "--db", str(db), "--http", f"127.0.0.1:{port}",
           "--workers", str(args.workers), "--ice-host", "127.0.0.1", *shlex.split(args.server_args)]  # fmt: skip
    with open(log_dir / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=python_die_with_parent)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def reconnect_cap(pids: list[int]) -> float | None:
    """The workers' reconnect cap (attempts/s per worker), read from a worker's --settings argument."""
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "--settings" in argv:
            return float(json.loads(argv[argv.index("--settings") + 1]).get("reconnect_rate", 0)) or None
    return None


# --- the run ---------------------------------------------------------------------------------------------------


class Soak:
    def __init__(
        self, args: argparse.Namespace, api: Api, farm: RunningFarm, server_pid: int, positions: dict[str, Point]
    ) -> None:
        self.args, self.api, self.farm, self.server_pid, self.positions = args, api, farm, server_pid, positions
        self.faults = faults_from(farm_parse_args(farm_argv(args, Path("-"))))
        self.ids = list(positions)
        self.viewers: list[Viewer] = []
        self.lines: list[str] = []  # what emit() printed, for the report
        self.t0 = 0.0
        self._cpu: dict[int, float] = {}
        self._cpu_at = 0.0
        self._reconnects: dict[str, float] = {}
        self._frames: list[int] = []
        self._stall = 0

    def emit(self, kind: str, record: Any) -> None:
        line = f"{kind} {json.dumps(asdict(record) if isinstance(record, (Sample, Kill, Meta)) else record)}"
        print(line, flush=True)
        self.lines.append(line)

    def expected(self, now: float) -> list[str]:
        return [cid for cid in self.ids if should_stream(self.faults, camera_number(cid), now, self.args.grace)]

    async def settle(self) -> float:
        """Until the registry is loaded, every worker is up and the cameras that should stream do."""
        started = time.monotonic()
        while time.monotonic() - started < self.args.settle_timeout:
            if await self.api.ready():
                expected = self.expected(time.time())
                if len(await self.api.streaming(expected)) >= len(expected):
                    return time.monotonic() - started
            await asyncio.sleep(1.0)
        return time.monotonic() - started

    async def start_viewers(self, owners: dict[str, int]) -> list[str]:
        healthy = [cid for cid in self.ids if not self.faults.has("drop", camera_number(cid))]
        others = [cid for cid in healthy if owners.get(cid, -1) not in (-1, self.args.kill_worker)]
        picked = others[:: max(1, len(others) // max(1, self.args.viewers))][: self.args.viewers]
        ttl = min(3600, int(self.args.minutes * 60) + 600)
        for cid in picked:
            viewer = Viewer(cid)
            await viewer.start(self.api, await self.api.stream_token(cid, *self.positions[cid], ttl))
            self.viewers.append(viewer)
        async with asyncio.timeout(30):
            while any(v.decoded == 0 for v in self.viewers):
                await asyncio.sleep(0.2)
        return picked

    async def sample(self) -> Sample:
        now, wall = time.monotonic(), time.time()
        frames = [v.decoded for v in self.viewers]  # read with the clock: the HTTP calls below take a while
        stall = stall_us().get("memory_full", 0)
        pids = tree([self.server_pid])
        cpu = cpu_by_pid(pids)
        used = sum(c - self._cpu.get(pid, 0.0) for pid, c in cpu.items())
        dt = max(1e-6, now - self._cpu_at)
        mem = memory(pids)
        metrics = await self.api.metrics()
        expected = self.expected(wall)
        up = await self.api.streaming(expected)
        rates = {}
        for worker, value in metrics.get("goldentime_reconnects_total", {}).items():
            before = self._reconnects.get(worker, 0.0)
            rates[worker] = round((value - before if value >= before else value) / dt, 2)  # a restart resets it
            self._reconnects[worker] = value
        fps = [round((f - b) / dt, 2) for f, b in zip(frames, self._frames or frames, strict=True)]
        stall_ms = (stall - self._stall) // 1000
        self._cpu, self._cpu_at, self._frames, self._stall = cpu, now, frames, stall
        rss = metrics.get("goldentime_worker_resident_bytes", {})
        return Sample(
            t=round(now - self.t0, 1), rss_mib=round(mem.rss / 2**20, 1), pss_mib=round(mem.pss / 2**20, 1),
            rss_by_process={w: round(v / 2**20, 1) for w, v in rss.items()}, cpu_pct=round(100 * used / dt, 1),
            states={k: int(v) for k, v in metrics.get("goldentime_cameras", {}).items()},
            should_up=len(expected), not_up=sorted(set(expected) - up), reconnect_rate=rates, viewer_fps=fps,
            restarts=int(sum(metrics.get("goldentime_worker_restarts_total", {}).values())),
            farm_dropped=int(self.farm.stat("dropped_connections")), stall_ms=stall_ms,
        )  # fmt: skip

    async def kill(self, owners: dict[str, int]) -> Kill:
        index = self.args.kill_worker
        worker = next(w for w in await self.api.workers() if w.get("index") == index)
        pid = int(worker["pid"])
        watched = [cid for cid, w in owners.items() if w == index and not self.faults.has("drop", camera_number(cid))]
        before = len(await self.api.streaming(watched))
        t = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        up_s = streaming_s = None
        curve: list[tuple[float, int]] = []
        while (elapsed := time.monotonic() - t) < self.args.kill_timeout:
            if up_s is None:
                again = next((w for w in await self.api.workers() if w.get("index") == index), {})
                if again.get("up") and again.get("pid") != pid:
                    up_s = round(elapsed, 2)
            streaming = len(await self.api.streaming(watched))
            curve.append((round(time.monotonic() - t, 2), streaming))
            if streaming >= len(watched):
                streaming_s = curve[-1][0]
                break
            await asyncio.sleep(0.1)
        return Kill(round(t - self.t0, 1), index, pid, len(watched), up_s, streaming_s, before, curve)

    async def run(self, meta: Meta) -> None:
        settle = await self.settle()
        owners = await self.api.owners(self.ids)
        meta.viewers = await self.start_viewers(owners)
        self.emit("SETUP", meta)
        self.emit("SETTLED", {"seconds": round(settle, 1), "owners": _count(owners.values())})
        self.t0 = self._cpu_at = time.monotonic()
        self._cpu = cpu_by_pid(tree([self.server_pid]))
        await self.sample()  # baselines for the rates
        end = self.t0 + self.args.minutes * 60
        kill_at = self.t0 + self.args.kill_at * self.args.minutes * 60 if self.args.kill_at > 0 else None
        killer: asyncio.Task[Kill] | None = None
        next_sample = self.t0 + self.args.sample
        while next_sample <= end + 0.01:
            if kill_at is not None and killer is None and time.monotonic() >= kill_at:
                killer = asyncio.create_task(self.kill(owners))
            wake = min(next_sample, kill_at) if kill_at is not None and killer is None else next_sample
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            if time.monotonic() >= next_sample:
                self.emit("SAMPLE", await self.sample())
                next_sample += self.args.sample
        if killer is not None:
            self.emit("KILL", await killer)


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def farm_argv(args: argparse.Namespace, csv_path: Path) -> list[str]:
    return ["--cameras", str(args.cameras), "--procs", str(args.farm_procs), "--port", "0", "--csv", str(csv_path),
            "--stats", "5", "--drop", args.drop, *shlex.split(args.farm_args)]  # fmt: skip


def positions(csv_path: Path) -> dict[str, Point]:
    with csv_path.open() as f:
        return {row["id"]: (float(row["lon"]), float(row["lat"])) for row in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    argv = argv if argv is not None else sys.argv[1:]
    if args.from_log:
        return write_results(args.from_log.read_text().splitlines(), args)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        log_dir = args.logs or workdir
        log_dir.mkdir(parents=True, exist_ok=True)
        csv_path = workdir / "farm.csv"
        with camfarm(farm_argv(args, csv_path)) as farm:
            db, basic = registry(workdir, csv_path, args.cameras)
            agency = client_header(db, "police-112", "agency")
            port = free_port()
            with server(db, port, args, log_dir) as proc:
                meta = Meta(args.cameras, args.workers, args.minutes, farm.info, load, argv, None,
                            started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))  # fmt: skip
                lines = asyncio.run(_run(args, meta, farm, proc, port, (basic, agency), positions(csv_path)))
    write_results(lines, args)


async def _run(
    args: argparse.Namespace, meta: Meta, farm: RunningFarm, proc: subprocess.Popen[bytes], port: int,
    clients: tuple[str, str], cams: dict[str, Point],
) -> list[str]:  # fmt: skip
    async with Api(f"http://127.0.0.1:{port}", *clients) as api:
        await api.wait_up(proc, 60)
        meta.reconnect_cap = reconnect_cap(tree([proc.pid]))
        soak = Soak(args, api, farm, proc.pid, cams)
        try:
            await soak.run(meta)
        finally:
            for viewer in soak.viewers:
                await viewer.close()
    return soak.lines


def write_results(lines: list[str], args: argparse.Namespace) -> None:
    from lib.soak_report import load, plot, report

    run = load(lines)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M") + (f"-{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"soak-{stamp}.png"
    plot(run, png)
    md = args.out / f"soak-{stamp}.md"
    md.write_text(report(run, machine(), png.name))
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
