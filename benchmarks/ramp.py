"""Ramp benchmark: how many always-on cameras one node holds with 0 lost frames, with the camera farm beside it.

    .venv/bin/python benchmarks/ramp.py                                  # full run: 10-minute windows
    .venv/bin/python benchmarks/ramp.py --window 30 --steps 250,500,1000,2000,4000   # a short run
    .venv/bin/python benchmarks/ramp.py --steps 6000,8000,10000,12000 --farm-procs 2 --farm-args "--frames-per-send 2"

The farm (benchmarks/camfarm.py: TCP interleaved, 15 fps, ~0.45 Mbps H.264 360p, 2 s GOP) starts once with
the largest step's cameras; a camera that no server asks for costs the farm nothing. Per step: the first N
cameras of the farm's CSV go into a fresh registry, `mediaserver serve` starts, the step waits until every
camera streams (or --settle-timeout), then measures over --window seconds:
  server CPU (% of one core, utime+stime of the server and all its descendants, from /proc), RSS and PSS
  (smaps_rollup), farm CPU, cameras streaming, frames received and packets lost / reconnects (from the
  server's /metrics; falls back to counting states in GET /api/cameras when /metrics is absent).
The ramp stops after a step that lost packets, left cameras not streaming, or saturated the machine.
Writes benchmarks/results/ramp-<date>.md and .png.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.camfarm_measure import cpu_seconds, machine, machine_busy, memory, metric_sum, prometheus, stall_us, tree
from lib.camfarm_proc import RunningFarm, camfarm, python_die_with_parent

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FRAMES_ON_TIME = 0.97


@dataclass
class Step:
    cameras: int
    settle_s: float  # time from server start until every camera streamed (or the timeout)
    streaming_min: int  # fewest cameras streaming seen during the window
    server_cpu: float  # % of one core, mean over the window
    farm_cpu: float
    rss_mib: float
    pss_mib: float
    frames: int  # access units received during the window
    expected_frames: int  # cameras x fps x window
    lost: int  # RTP packets lost during the window (-1: unknown)
    reconnects: int  # during the window (-1: unknown)
    source: str  # "metrics" or "api"
    errors: dict[str, int] = field(default_factory=dict)  # RTSP failures by kind since the server started
    farm_late: int = -1  # farm timer ticks > 2 ticks late during the window (the farm fell behind)
    farm_skipped: int = -1  # frames the farm did not send because a client's socket was full
    # time every task of the machine waited on memory during the window (PSI memory "full"): such a stall
    # stops farm and server alike, and shows as a burst of late frames and skipped frames, not as a server limit
    memory_stall_ms: int = -1
    machine_cpu: float = -1.0  # % of one core, the whole machine (softirq, everyone else's processes included)
    # every poll during the window: (s into the window, cameras streaming, packets lost so far, farm late ticks
    # so far, farm frames skipped so far, memory stall ms so far): when loss or a stall happened, whose it was
    timeline: list[tuple[float, int, int, int, int, int]] = field(default_factory=list)

    @property
    def held(self) -> bool:
        """Every camera streamed all window long, nothing lost, and (where known) >= 97 % of the frames the
        cameras should have sent arrived: short of that the farm or the server fell behind."""
        on_time = self.frames < 0 or self.frames >= FRAMES_ON_TIME * self.expected_frames
        return self.streaming_min >= self.cameras and self.lost == 0 and on_time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="250,500,1000,2000,4000,6000,8000,10000,12000,16000")
    p.add_argument("--window", type=float, default=600.0, help="measurement window per step, seconds")
    p.add_argument("--settle-timeout", type=float, default=0.0, help="default: 30 s + 1 s per 40 cameras")
    p.add_argument("--settle-extra", type=float, default=5.0, help="seconds after all cameras stream")
    p.add_argument("--farm-procs", type=int, default=1)
    p.add_argument("--farm-args", default="", help="extra camfarm.py arguments, e.g. '--frames-per-send 2'")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--server-args", default="", help="extra arguments for `mediaserver serve`, e.g. '--workers 1'")
    p.add_argument("--keep-going", action="store_true", help="run every step even after loss")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="", help="appended to the results file names")
    p.add_argument("--from-log", type=Path, help="only re-render the report from a previous run's printed JSON lines")
    p.add_argument("--logs", type=Path, help="keep each step's server log here (default: a temporary directory)")
    return p.parse_args(argv)


def cli(*args: str, capture: bool = True) -> str:
    out = subprocess.run([sys.executable, "-m", "mediaserver.cli", *args], capture_output=capture, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"mediaserver {' '.join(args)}: {out.stderr[-1000:]}")
    return out.stdout


def registry(workdir: Path, csv_path: Path, n: int) -> tuple[Path, str]:
    """A fresh DB with the first n cameras, and an HTTP Basic header of a client that may list them."""
    db = workdir / f"ramp-{n}.db"
    db.unlink(missing_ok=True)
    part = workdir / f"cams-{n}.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[: n + 1]))
    cli("cameras", "import", "--db", str(db), str(part))
    return db, client_header(db, "city-admin", "admin")


def client_header(db: Path, agency: str, role: str) -> str:
    """An HTTP Basic header of a new client (admins list the whole city; agencies open incidents)."""
    client = json.loads(cli("clients", "add", "--agency", agency, "--name", f"bench {role}", "--role", role, "--json",
                            "--db", str(db)))  # fmt: skip
    token = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    return f"Basic {token}"


def http_get(url: str, auth: str | None = None, timeout: float = 10.0) -> str | None:
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return str(response.read().decode())
    except (OSError, ValueError):
        return None


@dataclass
class Reading:
    streaming: int
    frames: float | None
    lost: float | None
    reconnects: float | None
    source: str
    errors: dict[str, int] = field(default_factory=dict)


def read_server(base: str, auth: str) -> Reading | None:
    text = http_get(f"{base}/metrics")
    if text is not None and "goldentime_cameras" in text:
        m = prometheus(text)
        streaming = metric_sum(m, "goldentime_cameras", 'state="streaming"') or 0
        frames, lost = metric_sum(m, "goldentime_frames_total"), metric_sum(m, "goldentime_packets_lost_total")
        reconnects = metric_sum(m, "goldentime_reconnects_total")
        return Reading(int(streaming), frames, lost, reconnects, "metrics", errors_by_kind(m))
    listing = http_get(f"{base}/api/cameras", auth)
    if listing is None:
        return None
    cams = json.loads(listing)
    return Reading(sum(c.get("state") == "streaming" for c in cams), None, None, None, "api")


def errors_by_kind(metrics: dict[str, dict[str, float]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for labels, value in metrics.get("goldentime_rtsp_errors_total", {}).items():
        kind = re.search(r'kind="([^"]*)"', labels)
        if kind and value:
            out[kind.group(1)] = out.get(kind.group(1), 0) + int(value)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_step(n: int, farm: RunningFarm, csv_path: Path, workdir: Path, args: argparse.Namespace) -> Step:
    db, auth = registry(workdir, csv_path, n)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mediaserver.cli", "serve", "--db", str(db), "--http", f"127.0.0.1:{port}"]
    log = open((args.logs or workdir) / f"server-{n}.log", "w")  # closed in finally
    server = subprocess.Popen(
        [*cmd, *shlex.split(args.server_args)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=python_die_with_parent,
    )  # fmt: skip
    try:
        settle = settle_until_streaming(n, base, auth, server, args)
        return measure(n, settle, base, auth, server.pid, farm, args)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def settle_until_streaming(
    n: int, base: str, auth: str, server: subprocess.Popen[bytes], args: argparse.Namespace
) -> float:
    started = time.monotonic()
    deadline = started + (args.settle_timeout or 30 + n / 40)  # the server caps connects/s city-wide
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited {server.returncode} (see its log)")
        reading = read_server(base, auth)
        if reading is not None and reading.streaming >= n:
            break
        time.sleep(1.0)
    settled = time.monotonic() - started
    time.sleep(args.settle_extra)
    return settled


def measure(n: int, settle: float, base: str, auth: str, pid: int, farm: RunningFarm, args: argparse.Namespace) -> Step:
    first = read_server(base, auth)
    late0, skipped0 = farm.stat("late_ticks"), farm.stat("skipped")
    t0, cpu0, farm0 = time.monotonic(), cpu_seconds(tree([pid])), cpu_seconds(farm.all_pids)
    stall0 = stall_us().get("memory_full", 0)
    busy0, _ = machine_busy()
    streaming_min = first.streaming if first else 0
    end = t0 + args.window
    timeline = []
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(5.0, left))
        reading = read_server(base, auth)
        streaming_min = min(streaming_min, reading.streaming if reading else 0)
        timeline.append((round(time.monotonic() - t0, 1), reading.streaming if reading else -1, _lost(first, reading),
                         int(farm.stat("late_ticks") - late0), int(farm.stat("skipped") - skipped0),
                         (stall_us().get("memory_full", 0) - stall0) // 1000))  # fmt: skip
    elapsed = time.monotonic() - t0
    cpu1, farm1 = cpu_seconds(tree([pid])), cpu_seconds(farm.all_pids)
    busy1, _ = machine_busy()
    last = read_server(base, auth)
    mem = memory(tree([pid]))

    def delta(attr: str) -> int:
        a, b = getattr(first, attr, None), getattr(last, attr, None)
        return int(b - a) if a is not None and b is not None else -1

    return Step(
        cameras=n, settle_s=round(settle, 1), streaming_min=streaming_min,
        server_cpu=round(100 * (cpu1 - cpu0) / elapsed, 1), farm_cpu=round(100 * (farm1 - farm0) / elapsed, 1),
        rss_mib=round(mem.rss / 2**20, 1), pss_mib=round(mem.pss / 2**20, 1), frames=delta("frames"),
        expected_frames=int(n * args.fps * elapsed), lost=delta("lost"), reconnects=delta("reconnects"),
        source=last.source if last else "none", errors=last.errors if last else {},
        farm_late=int(farm.stat("late_ticks") - late0), farm_skipped=int(farm.stat("skipped") - skipped0),
        memory_stall_ms=(stall_us().get("memory_full", 0) - stall0) // 1000, timeline=timeline,
        machine_cpu=round(100 * (busy1 - busy0) / elapsed, 1),
    )  # fmt: skip


def _lost(first: Reading | None, now: Reading | None) -> int:
    if first is None or now is None or first.lost is None or now.lost is None:
        return -1
    return int(now.lost - first.lost)


def saturated(step: Step) -> bool:
    return step.server_cpu + step.farm_cpu > 0.95 * 100 * (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    steps = [int(s) for s in args.steps.split(",")]
    results: list[Step] = []
    if args.from_log:
        lines = args.from_log.read_text().splitlines()
        results = [Step(**json.loads(line)) for line in lines if line.startswith("{")]
        farm = next((line for line in lines if line.startswith("READY ALL")), "")
        load = next((line[5:] for line in lines if line.startswith("LOAD ")), "not recorded")
        return write_results(results, args, argv if argv is not None else sys.argv[1:], farm, load)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"LOAD {load}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ramp-") as tmp:
        workdir = Path(tmp)
        csv_path = workdir / "farm.csv"
        farm_args = ["--cameras", str(max(steps)), "--procs", str(args.farm_procs), "--port", "0"]
        farm_args += ["--fps", str(args.fps), "--csv", str(csv_path), "--stats", "1", *shlex.split(args.farm_args)]
        with camfarm(farm_args) as farm:
            print(farm.info, flush=True)
            for n in steps:
                step = run_step(n, farm, csv_path, workdir, args)
                results.append(step)
                print(json.dumps(asdict(step)), flush=True)
                if not args.keep_going and (not step.held or saturated(step)):
                    break
            farm_info = farm.info
    write_results(results, args, argv if argv is not None else sys.argv[1:], farm_info, load)


def write_results(results: list[Step], args: argparse.Namespace, argv: list[str], farm_info: str, load: str) -> None:
    from lib.ramp_report import plot, report

    stamp = datetime.now().strftime("%Y-%m-%d-%H%M") + (f"-{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"ramp-{stamp}.png"
    plot(results, png)
    md = args.out / f"ramp-{stamp}.md"
    md.write_text(report(results, args, argv, farm_info, machine(), png.name, load))
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
