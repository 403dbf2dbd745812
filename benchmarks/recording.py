"""Recording ring cost: N always-on cameras with and without the ring, beside the camera farm.

    .venv/bin/python benchmarks/recording.py --cameras 1000,5000 --window 20

The farm (benchmarks/camfarm.py, as benchmarks/ramp.py runs it: TCP, 15 fps, ~0.45 Mbps H.264) starts once with
the largest count. Per count, the server runs twice on a fresh registry of the first N cameras, without
`--record-dir` and then with it (ring under a temporary directory, `--record-seconds` as given); each run waits
until every camera streams, then measures over --window seconds:
  server CPU (% of one core, the server and its workers, from /proc) and the whole machine's busy CPU (the
  kernel's writeback threads are not the server's), frames received vs expected and RTP packets lost (/metrics),
  bytes received (goldentime_bytes_total) vs bytes the ring wrote (goldentime_recording_written_bytes_total) and
  bytes the server's processes sent to the block layer (/proc/PID/io write_bytes), units the ring dropped, and
  the ring's index RAM per camera at the end.
`--micro`: the ring alone in this process (no farm, no server): N cameras' units (15 fps, 3,750 bytes: 0.45 Mbps)
appended as the receivers' C path does, at the cameras' pace, for --window seconds; process CPU (the appends and
the writer thread) with the ring against the same loop without it. Less exposed to a busy machine than the farm
runs (CPU time, not wall time), but it leaves out ingest itself.
Writes benchmarks/results/recording-<date>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.camfarm_measure import cpu_seconds, machine, machine_busy, metric_sum, prometheus, tree
from lib.camfarm_proc import RunningFarm, camfarm
from ramp import free_port, http_get, registry, settle_until_streaming

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Run:
    cameras: int
    recording: bool
    settle_s: float
    server_cpu: float  # % of one core
    machine_cpu: float  # % of one core, whole machine
    frames: int
    expected_frames: int
    lost: int
    received_bytes: int
    ring_written_bytes: int
    block_write_bytes: int  # /proc/PID/io write_bytes of the server's processes
    ring_dropped: int
    ring_units: int
    index_bytes: int
    ring_up: int  # workers whose ring records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", default="1000,5000")
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--record-seconds", type=float, default=30.0)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--farm-procs", type=int, default=1)
    p.add_argument("--farm-args", default="")
    p.add_argument("--server-args", default="")
    p.add_argument("--settle-timeout", type=float, default=0.0)
    p.add_argument("--settle-extra", type=float, default=3.0)
    p.add_argument("--only", choices=("both", "on", "off"), default="both")
    p.add_argument("--micro", action="store_true", help="the ring alone, in this process (see above)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def micro(n: int, seconds: float, ring_on: bool, directory: Path, fps: int = 15, size: int = 3750) -> dict[str, float]:
    """CPU % of one core for n cameras' appends (and the ring's writer thread) over `seconds`."""
    from mediaserver.recording import RecordingRing, RecordSettings

    ring = RecordingRing(RecordSettings(str(directory), window_s=30)) if ring_on else None
    slots = [ring.camera(f"cam{i}") for i in range(n)] if ring else list(range(n))
    data = os.urandom(size)
    append = ring.ring.append if ring else (lambda slot, data, pts, key: None)
    t0 = time.monotonic()
    cpu0 = time.process_time()
    tick = 0
    while (now := time.monotonic()) - t0 < seconds:
        for slot in slots:
            append(slot, data, tick * 6000, tick % 30 == 0)
        tick += 1
        time.sleep(max(0.0, t0 + tick / fps - time.monotonic()))
    elapsed = now - t0
    stats = ring.stats() if ring else {}
    cpu = 100 * (time.process_time() - cpu0) / elapsed
    if ring:
        ring.close()
    return {"cameras": n, "ring": ring_on, "cpu": round(cpu, 1), "units": stats.get("units", 0),
            "dropped": stats.get("dropped", 0), "written": stats.get("bytes_written", 0),
            "in": stats.get("bytes_in", 0), "index_bytes": stats.get("index_bytes", 0)}  # fmt: skip


def main_micro(args: argparse.Namespace, argv: list[str]) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="recording-micro-", dir=os.environ.get("RECORD_BENCH_DIR")) as tmp:
        for n in (int(c) for c in args.cameras.split(",")):
            for on in (False, True):
                rows.append(micro(n, args.window, on, Path(tmp) / f"{n}-{on}"))
                print(json.dumps(rows[-1]), flush=True)
    lines = ["# Recording ring alone (no farm, no server)", "",
             f"- machine: {machine()}; load average at start: {load} (shared with other work)",
             f"- command: `.venv/bin/python benchmarks/recording.py {' '.join(argv)}`", "",
             "| cameras | ring | process CPU % of one core | units | dropped | written / appended bytes |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ratio = f"{r['written'] / r['in']:.4f}" if r["in"] else "-"
        lines.append(f"| {r['cameras']} | {'on' if r['ring'] else 'off'} | {r['cpu']} | {r['units']} | "
                     f"{r['dropped']} | {ratio} |")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"recording-micro-{datetime.now().strftime('%Y-%m-%d-%H%M')}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def _metrics(base: str) -> dict[str, float]:
    text = http_get(f"{base}/metrics") or ""
    m = prometheus(text)
    names = (
        "goldentime_frames_total", "goldentime_packets_lost_total", "goldentime_bytes_total",
        "goldentime_recording_written_bytes_total", "goldentime_recording_dropped_total",
        "goldentime_recording_units_total", "goldentime_recording_index_bytes", "goldentime_recording_up",
    )  # fmt: skip
    return {name: metric_sum(m, name) or 0.0 for name in names}


def _block_writes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in text.splitlines() if line.startswith("write_bytes"))
    return total


def run(n: int, recording: bool, farm: RunningFarm, csv_path: Path, workdir: Path, args: argparse.Namespace) -> Run:
    db, auth = registry(workdir, csv_path, n)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ring = workdir / f"ring-{n}"
    extra = ["--record-dir", str(ring), "--record-seconds", str(args.record_seconds)] if recording else []
    cmd = [sys.executable, "-m", "mediaserver.cli", "serve", "--db", str(db), "--http", f"127.0.0.1:{port}", *extra]
    log = open(workdir / f"server-{n}-{int(recording)}.log", "w")  # closed in finally
    server = subprocess.Popen([*cmd, *shlex.split(args.server_args)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        settle = settle_until_streaming(n, base, auth, server, args)
        pids = tree([server.pid])
        m0, t0, cpu0, io0 = _metrics(base), time.monotonic(), cpu_seconds(pids), _block_writes(pids)
        busy0, _ = machine_busy()
        time.sleep(args.window)
        elapsed = time.monotonic() - t0
        cpu1, io1, m1 = cpu_seconds(pids), _block_writes(pids), _metrics(base)
        busy1, _ = machine_busy()

        def delta(name: str) -> int:
            return int(m1[name] - m0[name])

        return Run(
            cameras=n, recording=recording, settle_s=round(settle, 1),
            server_cpu=round(100 * (cpu1 - cpu0) / elapsed, 1), machine_cpu=round(100 * (busy1 - busy0) / elapsed, 1),
            frames=delta("goldentime_frames_total"), expected_frames=int(n * args.fps * elapsed),
            lost=delta("goldentime_packets_lost_total"), received_bytes=delta("goldentime_bytes_total"),
            ring_written_bytes=delta("goldentime_recording_written_bytes_total"), block_write_bytes=io1 - io0,
            ring_dropped=int(m1["goldentime_recording_dropped_total"]),
            ring_units=delta("goldentime_recording_units_total"),
            index_bytes=int(m1["goldentime_recording_index_bytes"]), ring_up=int(m1["goldentime_recording_up"]),
        )  # fmt: skip
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        subprocess.run(["rm", "-rf", str(ring)], check=False)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.micro:
        return main_micro(args, argv if argv is not None else sys.argv[1:])
    counts = [int(c) for c in args.cameras.split(",")]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="recording-", dir=os.environ.get("RECORD_BENCH_DIR")) as tmp:
        workdir = Path(tmp)
        csv_path = workdir / "farm.csv"
        farm_args = ["--cameras", str(max(counts)), "--procs", str(args.farm_procs), "--port", "0", "--fps",
                     str(args.fps), "--csv", str(csv_path), "--stats", "1", *shlex.split(args.farm_args)]  # fmt: skip
        modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.only]
        with camfarm(farm_args) as farm:
            for n in counts:
                for recording in modes:
                    runs.append(run(n, recording, farm, csv_path, workdir, args))
                    print(json.dumps(asdict(runs[-1])), flush=True)
            farm_info = farm.info
    write(runs, args, argv if argv is not None else sys.argv[1:], farm_info, load)


def write(runs: list[Run], args: argparse.Namespace, argv: list[str], farm_info: str, load: str) -> None:
    lines = [
        "# Recording ring: cost beside the camera farm", "",
        f"- machine: {machine()}; load average at start: {load} (shared with other work)",
        f"- farm: {farm_info}",
        f"- command: `.venv/bin/python benchmarks/recording.py {' '.join(argv)}`",
        f"- window {args.window:g} s per run after every camera streams; "
        f"ring `--record-seconds {args.record_seconds:g}`",
        "", "| cameras | ring | server CPU % | machine CPU % | frames / expected | lost pkts | received MB "
        "| ring wrote MB | block writes MB | written/received | ring dropped | index KiB/camera |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in runs:
        ratio = f"{r.ring_written_bytes / r.received_bytes:.3f}" if r.recording and r.received_bytes else "-"
        index = f"{r.index_bytes / 1024 / r.cameras:.1f}" if r.recording else "-"
        lines.append(
            f"| {r.cameras} | {'on' if r.recording else 'off'} | {r.server_cpu} | {r.machine_cpu} | {r.frames} / "
            f"{r.expected_frames} | {r.lost} | {r.received_bytes / 1e6:.0f} | {r.ring_written_bytes / 1e6:.0f} | "
            f"{r.block_write_bytes / 1e6:.0f} | {ratio} | {r.ring_dropped if r.recording else '-'} | {index} |"
        )
    lines += ["", "Raw runs:", "", "```", *(json.dumps(asdict(r)) for r in runs), "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"recording-{datetime.now().strftime('%Y-%m-%d-%H%M')}.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
