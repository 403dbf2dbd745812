"""Peers side by side: the CPU and memory it costs to hold N always-on RTSP cameras, in one run.

    .venv/bin/python benchmarks/ingest_peers.py --cameras 500 --window 60
    .venv/bin/python benchmarks/ingest_peers.py --cameras 200 --window 30 --peers ours,ffmpeg,gstreamer,janus

One camera farm (benchmarks/camfarm.py, 15 fps ~0.45 Mbps H.264 360p, 2 s GOP) serves every peer in turn:
  ours       `mediaserver serve` (TCP interleaved; its workers and front)
  ours-udp   `mediaserver serve --transport udp` (RTP over UDP, read with recvmmsg: core_ext/udprecv.pyx)
  ffmpeg     one `ffmpeg -rtsp_transport tcp -i URL -c copy -f null -` per camera
  gstreamer  one `gst-launch-1.0` with N x `rtspsrc protocols=tcp ! rtph264depay ! h264parse ! fakesink`
  janus      Janus's streaming plugin, N `type = "rtsp"` mountpoints (it pulls RTSP over UDP only, so its
             row is on another transport: the farm answers its SETUP with UDP)
Per peer: start, wait until it holds N sessions (established TCP connections to the farm, counted in
/proc/net/tcp) or the settle timeout, settle, then CPU (% of one core: utime+stime of the peer's process
tree over --window) and PSS (smaps_rollup) at the end. The farm's own CPU and the machine's 1-minute load
average at the start of the window are reported per row too (others' work on the machine shows there).
With --repeat R the whole list of peers runs R times in turn (ours, Janus, ours, Janus, ...), so a noisy
neighbour on the machine shows as disagreement between rounds; each round's ratio is against that round's best
peer, and the summary gives every round's ratio and their median.
Writes benchmarks/results/ingest-peers-<date>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.camfarm_measure import cpu_seconds, machine, memory, tree, version
from lib.camfarm_proc import RunningFarm, camfarm, python_die_with_parent
from ramp import free_port, read_server

from mediaserver.rtsp.batch_reader import IDLE_READ_MS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


@dataclass
class Row:
    peer: str
    transport: str
    sessions: int  # sessions held at the end (TCP connections to the farm; ours: cameras streaming)
    cpu: float  # % of one core over the window
    pss_mib: float
    rss_mib: float
    farm_cpu: float
    processes: int
    load: float = 0.0  # the machine's 1-minute load average at the start of the window
    note: str = ""
    round: int = 1

    def per_camera(self, cameras: int) -> tuple[float, float]:
        return self.cpu / cameras, self.pss_mib / cameras


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=500)
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=10.0, help="seconds after all sessions are up")
    p.add_argument("--settle-timeout", type=float, default=90.0)
    p.add_argument("--peers", default="ours,ours-udp,ffmpeg,gstreamer,janus")
    p.add_argument("--repeat", type=int, default=1, help="rounds of the whole peer list, in turn")
    p.add_argument("--farm-procs", type=int, default=1)
    p.add_argument("--server-args", default="", help="extra arguments for `mediaserver serve`")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def established_to(ports: set[int]) -> int:
    """Established TCP connections whose remote port is one of the farm's (client side of the sessions)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                count += fields[3] == "01" and remote_port in ports
    return count


def farm_ports(farm: RunningFarm) -> set[int]:
    return {int(base.rsplit(":", 1)[1]) for base in farm.bases.values()}


@contextlib.contextmanager
def spawn(cmds: list[list[str]], workdir: Path, stagger: float = 0.0) -> Iterator[list[int]]:
    """Start processes (stdout/stderr to one log), yield their pids, stop them all on exit."""
    log = open(workdir / "peer.log", "ab")  # closed below
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cmd in cmds:
            procs.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=python_die_with_parent
                )
            )
            if stagger:
                time.sleep(stagger)
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def hold(
    peer: str,
    transport: str,
    pids: list[int],
    farm: RunningFarm,
    args: argparse.Namespace,
    sessions: Callable[[], int] | None = None,
) -> Row:
    """Wait until the peer holds the cameras, settle, then measure over the window."""
    ports = farm_ports(farm)

    def held() -> int:
        return sessions() if sessions is not None else established_to(ports)

    deadline = time.monotonic() + args.settle_timeout
    while held() < args.cameras and time.monotonic() < deadline:
        time.sleep(1.0)
    time.sleep(args.settle)
    load = os.getloadavg()[0]
    t0, cpu0, farm0 = time.monotonic(), cpu_seconds(tree(pids)), cpu_seconds(farm.all_pids)
    time.sleep(args.window)
    elapsed = time.monotonic() - t0
    procs = tree(pids)
    cpu, farm_cpu = cpu_seconds(procs) - cpu0, cpu_seconds(farm.all_pids) - farm0
    mem = memory(procs)
    return Row(
        peer, transport, held(), round(100 * cpu / elapsed, 2), round(mem.pss / 2**20, 1), round(mem.rss / 2**20, 1),
        round(100 * farm_cpu / elapsed, 1), len(procs), round(load, 2),
    )  # fmt: skip


def run_ours(farm: RunningFarm, csv_path: Path, workdir: Path, args: argparse.Namespace, transport: str) -> Row:
    from ramp import registry

    db, auth = registry(workdir, csv_path, args.cameras)
    port = free_port()
    cmd = [sys.executable, "-m", "mediaserver.cli", "serve", "--db", str(db), "--http", f"127.0.0.1:{port}"]
    cmd += ["--transport", transport, *shlex.split(args.server_args)]
    with spawn([cmd], workdir) as pids:

        def streaming() -> int:
            reading = read_server(f"http://127.0.0.1:{port}", auth)
            return reading.streaming if reading else 0

        row = hold("ours (mediaserver serve)", transport, pids, farm, args, streaming)
    if transport == "udp":
        row.note = (
            "RTP over UDP read with recvmmsg(2) (core_ext/udprecv.pyx); nobody watches, so every camera is drained "
            f"by the batch reader once per --idle-read-ms ({idle_read_ms(args)} here) and its frames go to its GOP "
            "cache without entering Python (core_ext/gop.pyx)"
        )
    return row


def idle_read_ms(args: argparse.Namespace) -> str:
    given = shlex.split(args.server_args)
    if "--idle-read-ms" in given:
        return f"{given[given.index('--idle-read-ms') + 1]} ms"
    return f"{IDLE_READ_MS:g} ms, the default"


def run_ffmpeg(farm: RunningFarm, workdir: Path, args: argparse.Namespace) -> Row:
    base = ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-timeout", "10000000"]
    cmds = [[*base, "-i", farm.url(c), "-c", "copy", "-f", "null", "-"] for c in range(1, args.cameras + 1)]
    with spawn(cmds, workdir, stagger=0.01) as pids:
        return hold("ffmpeg (one per camera)", "tcp", pids, farm, args)


def run_gstreamer(farm: RunningFarm, workdir: Path, args: argparse.Namespace) -> Row:
    pipeline: list[str] = []
    for c in range(1, args.cameras + 1):
        pipeline += ["rtspsrc", f"location={farm.url(c)}", "protocols=tcp", "latency=200", "!"]
        pipeline += ["rtph264depay", "!", "h264parse", "!", "fakesink", "sync=false"]
    with spawn([["gst-launch-1.0", "-q", *pipeline]], workdir) as pids:
        return hold("GStreamer (one gst-launch, N x rtspsrc)", "tcp", pids, farm, args)


def janus_config(farm: RunningFarm, directory: Path, cameras: int) -> int:
    """A Janus config with only the streaming plugin and the HTTP transport (127.0.0.1) enabled; returns the
    HTTP port."""
    port = free_port()

    def others(kind: str, keep: str) -> str:
        found = sorted(p.name for p in (JANUS_LIB / kind).glob("*.so"))
        return ",".join(p for p in found if p != keep)

    (directory / "janus.jcfg").write_text(
        f'general: {{ configs_folder = "{directory}" plugins_folder = "{JANUS_LIB}/plugins" '
        f'transports_folder = "{JANUS_LIB}/transports" events_folder = "{JANUS_LIB}/events" '
        f'loggers_folder = "{JANUS_LIB}/loggers" debug_level = 3 }}\n'
        'media: { rtp_port_range = "20000-60000" }\n'
        f'plugins: {{ disable = "{others("plugins", "libjanus_streaming.so")}" }}\n'
        f'transports: {{ disable = "{others("transports", "libjanus_http.so")}" }}\n'
        f'events: {{ disable = "{others("events", "")}" }}\n'
        f'loggers: {{ disable = "{others("loggers", "")}" }}\n'
    )
    (directory / "janus.transport.http.jcfg").write_text(
        f'general: {{ http = true port = {port} ip = "127.0.0.1" https = false }}\nadmin: {{ admin_http = false }}\n'
    )
    mounts = [
        f'cam{c}: {{ type = "rtsp" id = {c} description = "cam{c}" audio = false video = true '
        f'url = "{farm.url(c)}" rtsp_reconnect_delay = 5 rtsp_failcheck = false }}'
        for c in range(1, cameras + 1)
    ]
    (directory / "janus.plugin.streaming.jcfg").write_text("general: { }\n" + "\n".join(mounts) + "\n")
    return port


def _janus_post(url: str, body: Mapping[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return cast(dict[str, Any], json.loads(response.read()))


def janus_live(port: int, cameras: int) -> int:
    """Mountpoints that received media in the last second, from the streaming plugin's `info` request."""
    base = f"http://127.0.0.1:{port}/janus"
    try:
        session = _janus_post(base, {"janus": "create", "transaction": "s"})["data"]["id"]
        attach = {"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": "a"}
        handle = _janus_post(f"{base}/{session}", attach)["data"]["id"]
        live = 0
        for cam in range(1, cameras + 1):
            body = {"janus": "message", "body": {"request": "info", "id": cam}, "transaction": "i"}
            info = _janus_post(f"{base}/{session}/{handle}", body)["plugindata"]["data"]["info"]
            live += any(0 <= m.get("age_ms", -1) < 1000 for m in info.get("media", []))
        _janus_post(f"{base}/{session}", {"janus": "destroy", "transaction": "d"})
        return live
    except (OSError, KeyError, ValueError):
        return 0


def run_janus(farm: RunningFarm, workdir: Path, args: argparse.Namespace) -> Row:
    config = workdir / "janus"
    config.mkdir(exist_ok=True)
    port = janus_config(farm, config, args.cameras)
    with spawn([["janus", "-F", str(config), "-C", str(config / "janus.jcfg")]], workdir) as pids:
        row = hold("Janus streaming plugin", "udp", pids, farm, args, lambda: janus_live(port, args.cameras))
    row.note = (
        "RTSP control over TCP, media over UDP (Janus cannot pull interleaved); sessions held = mountpoints whose "
        "last packet is < 1 s old (streaming plugin `info` request, `age_ms`)"
    )
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.load_at_start = os.getloadavg()
    peers = args.peers.split(",")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        workdir = Path(tmp)
        csv_path = workdir / "farm.csv"
        farm_args = ["--cameras", str(args.cameras), "--procs", str(args.farm_procs), "--port", "0"]
        with camfarm([*farm_args, "--csv", str(csv_path)]) as farm:
            print(farm.info, flush=True)
            runners = {
                "ours": lambda: run_ours(farm, csv_path, workdir, args, "tcp"),
                "ours-udp": lambda: run_ours(farm, csv_path, workdir, args, "udp"),
                "ffmpeg": lambda: run_ffmpeg(farm, workdir, args),
                "gstreamer": lambda: run_gstreamer(farm, workdir, args),
                "janus": lambda: run_janus(farm, workdir, args),
            }
            for round_ in range(1, args.repeat + 1):
                for peer in peers:
                    if peer == "janus" and shutil.which("janus") is None:
                        print("janus: not installed (apt-get install -y janus); skipped", flush=True)
                        continue
                    rows.append(runners[peer]())
                    rows[-1].round = round_
                    print(json.dumps(rows[-1].__dict__), flush=True)
                    time.sleep(3)  # let the farm drop the previous peer's sessions
            info = farm.info
        log_tail = (workdir / "peer.log").read_text(errors="replace")[-1500:] if (workdir / "peer.log").exists() else ""
    write_results(rows, args, argv if argv is not None else sys.argv[1:], info, log_tail)


def write_results(rows: list[Row], args: argparse.Namespace, argv: list[str], farm: str, log_tail: str) -> None:
    n = args.cameras
    peers = [r for r in rows if not r.peer.startswith("ours")]

    def best_of(transport: str, round_: int) -> Row | None:
        same = [r for r in peers if r.transport == transport and r.round == round_]
        return min(same, key=lambda r: r.cpu, default=None)

    lines = [
        f"# Ingest peers side by side: {n} always-on cameras{' (SHORT RUN)' if n < 500 or args.window < 60 else ''}",
        "",
        f"- machine: {machine()}",
        "- load average at start (1/5/15 min): " + " / ".join(f"{x:.2f}" for x in args.load_at_start),
        f"- command: `.venv/bin/python benchmarks/ingest_peers.py {shlex.join(argv)}`",
        f"- farm: {farm}",
        f"- peers: {version(['ffmpeg', '-version'])}; {version(['gst-launch-1.0', '--version'])}; "
        f"{version(['janus', '--version'])}",
        f"- window {args.window:g} s after all sessions are up + {args.settle:g} s settle; CPU = utime+stime of the "
        "peer's process tree over the window, % of one core; memory = PSS (shared pages split) at the end",
        "",
        "| round | peer | transport | sessions held | CPU % (all) | CPU % per camera | PSS MiB | PSS MiB per camera |"
        " CPU vs best peer, same transport and round | farm CPU % | processes | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = {}
    for r in rows:
        cpu, pss = r.per_camera(n)
        same = best_of(r.transport, r.round)
        if same and same.cpu and r.peer.startswith("ours"):
            ratios.setdefault(f"ours over {r.transport} vs {same.peer.split(' ')[0]}", []).append(r.cpu / same.cpu)
        ratio = (
            f"{r.cpu / same.cpu:.2f}x ({same.peer.split(' ')[0]})"
            if same and same.cpu
            else f"- (no {r.transport} peer)"
        )
        lines.append(
            f"| {r.round} | {r.peer} | {r.transport} | {r.sessions}/{n} | {r.cpu} | {cpu:.3f} | {r.pss_mib} | "
            f"{pss:.2f} | {ratio} | {r.farm_cpu} | {r.processes} | {r.load} |"
        )
    lines += ["", "CPU ratio per round (median):", ""]
    lines += [
        f"- {what}: {', '.join(f'{x:.2f}x' for x in found)} (median {statistics.median(found):.2f}x)"
        for what, found in ratios.items()
    ]
    lines += ["", *dict.fromkeys(f"- {r.peer}: {r.note}" for r in rows if r.note)]
    if log_tail.strip():
        lines += ["", "Tail of the peers' log:", "", "```", log_tail.strip(), "```"]
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"ingest-peers-{stamp}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
