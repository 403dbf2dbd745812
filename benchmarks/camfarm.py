"""Camera farm: N simulated RTSP cameras from one pre-encoded clip, spread over several processes.

    .venv/bin/python benchmarks/camfarm.py --cameras 2000 --procs 2 --csv /tmp/farm.csv
    .venv/bin/python benchmarks/camfarm.py --cameras 100 --codec h265 --auth digest --user u --password p
    .venv/bin/python benchmarks/camfarm.py --cameras 1000 --drop 0.1:60 --silent 0.01 --garbage 0.01

Camera i (1-based) is `rtsp://HOST:PORT/cam{i}`; process k serves a contiguous range of cameras on port
BASE+k (or an OS-chosen port with `--port 0`). The clip (made with ffmpeg via mediaserver.simcam.clips) is
packetised once, before the processes fork; each process drives all its cameras from one timer tick, and a
frame is stamped (RTP seq/timestamp/SSRC) once per tick for every session at the same clip position, so the
per-camera cost is one send(2) per frame (see camfarm_rtsp.py; `--frames-per-send K` trades delivery timing
for K times fewer sends). Each camera session starts at the clip's keyframe; timestamps rise forever (the clip
loops), like a camera's.

Output lines on stdout:
    READY rtsp://HOST:PORT/cam{a} {a}-{b}      one per process: the cameras it serves
    READY ALL {n} cameras codec=... bitrate=...   once, after the CSV is written
    STATS {json}                                  every --stats seconds, per process (with --stats)
Faults (fractions of cameras, picked by a hash of the camera number, so the same cameras every run):
    --drop F:P[:D]   close the camera's sessions and refuse connections for D s (default 5) every P s
    --silent F       answer PLAY, then never send media
    --garbage F      answer PLAY, then send random bytes (no valid interleaved framing) at the stream's rate
    --refuse-auth F  answer 401 to every DESCRIBE/SETUP/PLAY, whatever the credentials
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import ctypes
import json
import multiprocessing as mp
import os
import random
import resource
import signal
import socket
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from lib.camfarm_clip import Clip, load_clip
from lib.camfarm_rtsp import Faults, Scheduler, Session, Settings

from mediaserver.simcam.clips import ensure_clip

# Seoul's 25 districts with rough centres, for plausible registry rows.
DISTRICTS = {
    "Jongno-gu": (37.573, 126.979), "Jung-gu": (37.564, 126.998), "Yongsan-gu": (37.532, 126.990),
    "Seongdong-gu": (37.563, 127.037), "Gwangjin-gu": (37.538, 127.082), "Dongdaemun-gu": (37.574, 127.040),
    "Jungnang-gu": (37.606, 127.093), "Seongbuk-gu": (37.589, 127.017), "Gangbuk-gu": (37.640, 127.026),
    "Dobong-gu": (37.669, 127.047), "Nowon-gu": (37.654, 127.057), "Eunpyeong-gu": (37.603, 126.929),
    "Seodaemun-gu": (37.579, 126.937), "Mapo-gu": (37.566, 126.902), "Yangcheon-gu": (37.517, 126.866),
    "Gangseo-gu": (37.551, 126.850), "Guro-gu": (37.495, 126.888), "Geumcheon-gu": (37.457, 126.896),
    "Yeongdeungpo-gu": (37.526, 126.896), "Dongjak-gu": (37.512, 126.940), "Gwanak-gu": (37.478, 126.952),
    "Seocho-gu": (37.484, 127.033), "Gangnam-gu": (37.517, 127.047), "Songpa-gu": (37.515, 127.106),
    "Gangdong-gu": (37.530, 127.124),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=100)
    p.add_argument("--procs", type=int, default=1, help="processes (each its own port and event loop)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554, help="first port (process k: PORT+k); 0 = OS-chosen")
    p.add_argument("--codec", choices=("h264", "h265"), default="h264")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes")
    # testsrc is easy to code: x264 tops out near 0.45 Mbps at 360p15 whatever the target; READY says the real rate
    p.add_argument("--bitrate", default="3000k", help="encoder target (see the READY line for the real rate)")
    p.add_argument("--size", default="640x360")
    p.add_argument("--clip-seconds", type=int, default=4)
    p.add_argument("--clip", type=Path, help="use this MP4 instead of making one (no B-frames)")
    p.add_argument("--clip-dir", type=Path, default=Path(os.environ.get("GOLDENTIME_CLIP_CACHE", "/tmp/camfarm-clips")))
    p.add_argument("--auth", choices=("none", "basic", "digest"), default="none")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="admin")
    p.add_argument("--tick", type=float, default=0.01, help="seconds between sends (one timer per process)")
    p.add_argument(
        "--frames-per-send",
        type=int,
        default=1,
        metavar="K",
        help="TCP: each camera writes K frames at once every K frame periods (timestamps unchanged, delivery up to "
        "K-1 frames late; fewer send(2) calls for a farm that must fit beside the server). Default 1: every frame "
        "as it is due, like a camera",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority change for the serving processes (e.g. -10: the farm stands in for cameras, "
        "which never wait for the server's CPU; negative needs CAP_SYS_NICE)",
    )
    p.add_argument("--drop", default="", metavar="FRAC:PERIOD[:DOWN]")
    p.add_argument("--silent", type=float, default=0.0)
    p.add_argument("--garbage", type=float, default=0.0)
    p.add_argument("--refuse-auth", type=float, default=0.0)
    p.add_argument("--csv", type=Path, help="write id,name,district,lat,lon,url for `mediaserver cameras import`")
    p.add_argument("--no-creds-in-csv", action="store_true", help="leave user:password out of the CSV URLs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stats", type=float, default=0.0, help="print a STATS line per process every S seconds")
    return p.parse_args(argv)


def faults_from(args: argparse.Namespace) -> Faults:
    drop, period, down = 0.0, 60.0, 5.0
    if args.drop:
        parts = [float(x) for x in args.drop.split(":")]
        drop, period = parts[0], parts[1] if len(parts) > 1 else 60.0
        down = parts[2] if len(parts) > 2 else min(5.0, period / 2)
    return Faults(drop, period, down, args.silent, args.garbage, args.refuse_auth)


def make_clip(args: argparse.Namespace) -> Clip:
    if args.clip:
        return load_clip(args.clip)
    gop = max(1, round(args.gop * args.fps))
    path = ensure_clip(args.clip_dir, args.codec, args.size, args.fps, gop, args.clip_seconds, args.bitrate)
    return load_clip(path)


def split(cameras: int, procs: int) -> list[range]:
    """Contiguous 1-based camera ranges, one per process, sizes differing by at most one."""
    bounds = [1 + cameras * k // procs for k in range(procs + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(procs)]


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _check_fd_limit(cameras_per_process: int) -> None:
    """A playing TCP session holds two descriptors (the transport's and the farm's own send handle)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if 2 * cameras_per_process + 64 > soft:
        print(f"camfarm: {cameras_per_process} cameras per process need ~{2 * cameras_per_process} descriptors "
              f"(limit {soft}); sessions past it send through the slower transport path: add --procs",
              file=sys.stderr)  # fmt: skip


def worker(
    index: int, cams: range, port: int, settings: Settings, stats: float, pipe: Connection, nice: int = 0
) -> None:
    """One farm process: an RTSP server for `cams` and the scheduler that feeds them."""
    _die_with_parent()
    if nice:
        try:
            os.nice(nice)
        except OSError as exc:
            print(f"camfarm: process {index}: cannot change priority by {nice}: {exc}", file=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the farm ends
    uvloop.run(_serve(index, cams, port, settings, stats, pipe))


async def _serve(index: int, cams: range, port: int, settings: Settings, stats: float, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    farm = Scheduler(settings, cams)
    udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=_udp_pair(settings.host))
    server = await loop.create_server(
        lambda: Session(farm, settings, udp), settings.host, port, backlog=4096, reuse_address=True
    )
    pipe.send(server.sockets[0].getsockname()[1])
    pipe.close()
    tasks = [asyncio.create_task(farm.run())]
    if stats:
        tasks.append(asyncio.create_task(_report(index, farm, stats)))
    await asyncio.gather(*tasks)


def _udp_pair(host: str) -> socket.socket:
    """A UDP socket on an even port whose odd neighbour we also hold (RTCP), so clients that punch or send
    receiver reports to server_port+1 don't get ICMP errors. The RTCP socket lives as long as the process."""
    for _ in range(50):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            port = random.randrange(30000, 60000, 2)
            rtp.bind((host, port))
            rtcp.bind((host, port + 1))
            _udp_pair.keep.append(rtcp)  # type: ignore[attr-defined]
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            return rtp
        except OSError:
            rtp.close()
            rtcp.close()
    raise OSError("no free UDP port pair")


_udp_pair.keep = []  # type: ignore[attr-defined]


async def _report(index: int, farm: Scheduler, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        c = farm.counters
        cpu = sum(os.times()[:2])
        line = {"proc": index, "pid": os.getpid(), "cpu_s": round(cpu, 2), "sessions": c.sessions}
        line |= {"playing": c.playing, "frames": c.frames, "skipped": c.skipped, "late_ticks": c.late_ticks}
        line |= {"dropped_connections": c.dropped_connections, "auth_failures": c.auth_failures}
        print("STATS", json.dumps(line), flush=True)


def camera_url(args: argparse.Namespace, port: int, cam: int) -> str:
    creds = ""
    if args.auth != "none" and not args.no_creds_in_csv:
        creds = f"{quote(args.user, safe='')}:{quote(args.password, safe='')}@"
    return f"rtsp://{creds}{args.host}:{port}/cam{cam}"


def write_csv(path: Path, args: argparse.Namespace, ports: list[int], ranges: list[range]) -> None:
    rng = random.Random(args.seed)
    names = list(DISTRICTS)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "name", "district", "lat", "lon", "url"])
        for port, cams in zip(ports, ranges, strict=True):
            for cam in cams:
                district = names[cam % len(names)]
                lat, lon = DISTRICTS[district]
                lat, lon = lat + rng.uniform(-0.02, 0.02), lon + rng.uniform(-0.025, 0.025)
                row = [f"cam-{cam:05d}", f"{district} camera {cam}", district, f"{lat:.6f}", f"{lon:.6f}"]
                out.writerow([*row, camera_url(args, port, cam)])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _raise_fd_limit()
    clip = make_clip(args)
    settings = Settings(
        args.host, clip, args.auth, args.user, args.password, faults_from(args), args.tick, args.frames_per_send
    )
    ranges = split(args.cameras, max(1, min(args.procs, args.cameras)))
    _check_fd_limit(max(len(r) for r in ranges))
    ctx = mp.get_context("fork")  # children share the packetised clip copy-on-write
    procs, ports = [], []
    for k, cams in enumerate(ranges):
        parent, child = ctx.Pipe(duplex=False)
        port = 0 if args.port == 0 else args.port + k
        proc = ctx.Process(target=worker, args=(k, cams, port, settings, args.stats, child, args.nice), daemon=True)
        proc.start()
        procs.append(proc)
        if not parent.poll(30):
            sys.exit(f"camfarm: process {k} did not start")
        ports.append(parent.recv())
    if args.csv:
        write_csv(args.csv, args, ports, ranges)
    for port, cams in zip(ports, ranges, strict=True):
        print(f"READY rtsp://{args.host}:{port}/cam{cams.start} {cams.start}-{cams.stop - 1}", flush=True)
    info = f"codec={clip.codec} fps={clip.fps} size={clip.width}x{clip.height} bitrate={clip.bitrate / 1e3:.0f}kbps"
    info += f" frames_per_send={args.frames_per_send} nice={args.nice}"
    print(f"READY ALL {args.cameras} cameras {info} pids={','.join(str(p.pid) for p in procs)}", flush=True)
    _wait(procs)


def _wait(procs: Sequence[mp.process.BaseProcess]) -> None:
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop and all(p.is_alive() for p in procs):
        time.sleep(0.2)
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(5)


if __name__ == "__main__":
    main()
