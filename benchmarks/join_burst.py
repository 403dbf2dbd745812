"""Join burst: N WHEP offers to one camera within S seconds, as an incident brings them (issue 16).

    .venv/bin/python benchmarks/join_burst.py --bursts 50,200 --spread 2      # writes results/
    .venv/bin/python benchmarks/join_burst.py --profile 50                   # where one join's CPU goes

Burst mode: one clock camera (clock_camera.py, 640x360 25 fps) in a registry, `mediaserver serve` as a real
process on 127.0.0.1, and one client process (this one) holding `--watchers` viewers already watching. Stream
tokens as many operators on one incident would hold them: `--clients` agency clients, `--tokens` tokens each,
offers spread round-robin over them (quotas: 64 sessions per token, 256 per client). Every viewer is a real
WebRTC peer (benchmarks/lib/viewer_probe.py's ProbeViewer: aiortc's SDP, ICE, DTLS-SRTP and RTCP, media
counted by RTP marker bits after SRTP decryption). Offers are made before the burst, then POSTed at evenly
spread times over `--spread` s. Per burst: answers by status, offer -> answer and offer -> first frame
p50/p95, the watchers' fps over the burst, and the server's CPU per join: CPU-seconds of the server's process
tree from the first offer until every joined viewer had a frame (or `--wait` s), less the steady rate
measured over `--steady` s just before, divided by N. The viewers close between bursts.

Profile mode: Egress in this process behind a minimal HTTP endpoint, under cProfile, answering N viewers that
run in a child process (so only the server's side is profiled), each until its first frame; prints and
records the cumulative time of the join's parts.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import multiprocessing as mp
import os
import platform
import pstats
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(HERE)]

from lib.viewer_probe import ProbeViewer  # noqa: E402
from ttfp import process, wait_http  # noqa: E402

from mediaserver.simcam import SYSTEM_PYTHON  # noqa: E402

LAT, LON = 37.5665, 126.978
CAMERA = "burstcam"
TICKS = os.sysconf("SC_CLK_TCK")


# --- the server's CPU -----------------------------------------------------------------------------------------
def tree_cpu_s(pid: int) -> float:
    """CPU-seconds (user + system) of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        stats[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


# --- tokens ---------------------------------------------------------------------------------------------------
def make_tokens(db: str, clients: int, per_client: int) -> list[str]:
    """`clients` agency clients, one incident each around the camera, `per_client` operators' tokens each."""
    from signaling.access import offline
    from signaling.incidents import parse_create, rfc3339

    access = offline(db)
    tokens = []
    try:
        for c in range(clients):
            client, _ = access.add_client(f"agency-{c}", f"burst client {c}", operator="bench")
            body = {"service": "112-video", "basis": "benchmark: simulated camera",
                    "until": rfc3339(time.time() + 3600), "radius_m": 500, "nearest": 10,
                    "geometry": {"type": "Point", "coordinates": [LON, LAT]}}  # fmt: skip
            incident = access.create_incident(parse_create(body), client, "bench", None)
            for k in range(per_client):
                token, _, _ = access.issue_stream_token(incident, client, f"operator-{c}-{k}", 3600, None)
                tokens.append(token)
    finally:
        access.close()
    return tokens


# --- one burst --------------------------------------------------------------------------------------------------
@dataclass
class Join:
    status: int = 0
    answer_s: float | None = None
    first_frame_s: float | None = None
    viewer: ProbeViewer | None = None
    detail: str = ""


@dataclass
class Burst:
    n: int
    spread_s: float
    joins: list[Join] = field(default_factory=list)
    watcher_fps: list[float] = field(default_factory=list)
    watcher_fps_before: list[float] = field(default_factory=list)
    burst_s: float = 0.0
    cpu_s: float = 0.0
    steady_cpu_per_s: float = 0.0
    last_answer_s: float = 0.0

    @property
    def cpu_per_join_ms(self) -> float:
        return 1000 * (self.cpu_s - self.steady_cpu_per_s * self.burst_s) / self.n


async def post(session: aiohttp.ClientSession, base: str, token: str, sdp: str) -> tuple[int, str]:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with session.post(f"{base}/whep/{CAMERA}", data=sdp, headers=headers) as res:
        return res.status, await res.text()


async def join(session: aiohttp.ClientSession, base: str, token: str, viewer: ProbeViewer, sdp: str) -> Join:
    t0 = time.monotonic()
    result = Join(viewer=viewer)
    try:
        result.status, text = await post(session, base, token, sdp)
    except aiohttp.ClientError as exc:
        result.detail = repr(exc)
        return result
    result.answer_s = time.monotonic() - t0
    if result.status != 201:
        result.detail = text[:200]
        return result
    await viewer.accept(text)
    while viewer.counter.frames == 0:
        if time.monotonic() - t0 > 30:
            return result
        await asyncio.sleep(0.01)
    result.first_frame_s = time.monotonic() - t0
    return result


async def fps(viewers: list[ProbeViewer], seconds: float) -> list[float]:
    before = [v.counter.frames for v in viewers]
    await asyncio.sleep(seconds)
    return [(v.counter.frames - b) / seconds for v, b in zip(viewers, before, strict=True)]


async def watch(session: aiohttp.ClientSession, base: str, tokens: list[str], count: int) -> list[ProbeViewer]:
    viewers = []
    for k in range(count):
        viewer = ProbeViewer()
        got = await join(session, base, tokens[k % len(tokens)], viewer, await viewer.offer())
        assert got.first_frame_s is not None, f"watcher {k}: {got.status} {got.detail}"
        viewers.append(viewer)
    return viewers


async def run_burst(args: argparse.Namespace, base: str, pid: int, tokens: list[str], n: int) -> Burst:
    burst = Burst(n, args.spread)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        watchers = await watch(session, base, tokens, args.watchers)
        viewers = [ProbeViewer() for _ in range(n)]
        offers = [await v.offer() for v in viewers]
        cpu0, w0 = tree_cpu_s(pid), time.monotonic()
        burst.watcher_fps_before = await fps(watchers, args.steady)
        burst.steady_cpu_per_s = (tree_cpu_s(pid) - cpu0) / (time.monotonic() - w0)

        cpu0, t0 = tree_cpu_s(pid), time.monotonic()

        async def at(k: int) -> Join:
            await asyncio.sleep(max(0.0, t0 + k * args.spread / n - time.monotonic()))
            return await join(session, base, tokens[(args.watchers + k) % len(tokens)], viewers[k], offers[k])

        fps_task = asyncio.create_task(fps(watchers, args.spread + 1.0))
        burst.joins = list(await asyncio.wait_for(asyncio.gather(*(at(k) for k in range(n))), args.wait + 60))
        burst.burst_s = time.monotonic() - t0
        burst.cpu_s = tree_cpu_s(pid) - cpu0
        burst.watcher_fps = await fps_task
        odd = {(j.status, j.detail) for j in burst.joins if j.status not in (201, 503)}
        if odd:
            print(f"other answers: {sorted(odd)[:5]}", flush=True)
        burst.last_answer_s = max((k * args.spread / n + (j.answer_s or 0)) for k, j in enumerate(burst.joins))
        for viewer in [*viewers, *watchers]:
            await viewer.close()
    return burst


# --- servers ----------------------------------------------------------------------------------------------------
def registry(tmp: str, rtsp: str) -> str:
    db = str(Path(tmp) / "burst.db")
    add = [sys.executable, "-m", "mediaserver.cli", "cameras", "add", "--db", db, "--id", CAMERA, "--name", "Burst"]
    subprocess.run([*add, "--lat", str(LAT), "--lon", str(LON), "--url", rtsp], check=True, cwd=ROOT)
    return db


async def bursts(args: argparse.Namespace) -> tuple[list[Burst], str]:
    camera = [SYSTEM_PYTHON, str(HERE / "clock_camera.py"), "--port", "0", "--gop", str(args.gop)]
    with process(camera, "READY ") as ready, tempfile.TemporaryDirectory(prefix="burst-") as tmp:
        db = registry(tmp, ready.split()[1] + "/clock")
        tokens = make_tokens(db, args.clients, args.tokens)
        http = f"127.0.0.1:{args.port}"
        serve = [sys.executable, "-m", "mediaserver.cli", "serve", "--db", db, "--http", http,
                 "--ice-host", "127.0.0.1", *args.server_arg]  # fmt: skip
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log:
            # started once, before any measurement
            # workers run `python -P` (the installed code): PYTHONPATH makes them run this tree's, as the front does
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            server = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        try:
            wait_http(f"http://{http}/", server)
            await asyncio.sleep(args.settle)
            results = []
            for n in args.bursts:
                results.append(await run_burst(args, f"http://{http}", server.pid, tokens, n))
                print(summary_row(results[-1]), flush=True)
                await asyncio.sleep(3)  # closed sessions go
        finally:
            server.terminate()
            server.wait(10)
        refusals = [line for line in log_path.read_text().splitlines() if "refusing" in line]
        return results, "\n".join(refusals[:5])


# --- profile mode -----------------------------------------------------------------------------------------------
def _profile_viewers(url: str, n: int, done: Any) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(n):
                viewer = ProbeViewer()
                async with session.post(url, data=await viewer.offer()) as res:
                    await viewer.accept(await res.text())
                while viewer.counter.frames == 0:
                    await asyncio.sleep(0.005)
                await viewer.close()

    asyncio.run(main())
    done.set()


PARTS = {  # (label, function name as pstats shows it: file fragment, function)
    "Egress.offer (all of it, offer to answer)": ("egress.py", "offer"),
    "  check_offer (SDP parse for the checks)": ("egress.py", "check_offer"),
    "  RTCPeerConnection() (incl. certificate)": ("rtcpeerconnection.py", "__init__"),
    "  certificate generation": ("rtcdtlstransport.py", "generateCertificate"),
    "  setRemoteDescription": ("rtcpeerconnection.py", "setRemoteDescription"),
    "  createAnswer": ("rtcpeerconnection.py", "createAnswer"),
    "  setLocalDescription (ICE gathering)": ("rtcpeerconnection.py", "setLocalDescription"),
    "  aioice gather_candidates": ("ice.py", "gather_candidates"),
    "  SDP parse (SessionDescription.parse)": ("sdp.py", "parse"),
    "  SDP serialise (SessionDescription.__str__)": ("sdp.py", "__str__"),
    "ICE connectivity checks (aioice check_start)": ("ice.py", "check_start"),
    "ICE STUN requests handled (request_received)": ("ice.py", "request_received"),
    "DTLS start (handshake, keys, SRTP sessions)": ("rtcdtlstransport.py", "start"),
    "  OpenSSL context per transport": ("rtcdtlstransport.py", "_create_ssl_context"),
    "  SRTP session setup (pylibsrtp Session)": ("pylibsrtp/__init__.py", "__init__"),
    "RTP receiver start (rate estimator etc.)": ("rtcrtpreceiver.py", "receive"),
    "RTP sender start (send)": ("rtcrtpsender.py", "send"),
    "aiohttp request handling": ("web_protocol.py", "_handle_request"),
    "pc.close (per viewer)": ("rtcpeerconnection.py", "close"),
}


def profile_table(stats: pstats.Stats, n: int) -> list[str]:
    rows = ["| part | ms per join (cumulative CPU under cProfile) |", "| --- | ---: |"]
    for label, (fragment, name) in PARTS.items():
        total = sum(v[3] for (f, _, fn), v in stats.stats.items() if fn == name and f.endswith(fragment))  # type: ignore[attr-defined]
        rows.append(f"| {label} | {1000 * total / n:.2f} |")
    return rows


async def profile(args: argparse.Namespace) -> tuple[list[str], str, float]:
    from aiohttp import web
    from helpers.feed import clip_camera, make_clip, read_units

    from mediaserver.egress import Egress

    with tempfile.TemporaryDirectory() as tmp:
        units = read_units(make_clip(Path(tmp) / "c.h264", seconds=4, gop=50))
    async with clip_camera("cam", units) as hub:
        egress = Egress({"cam": hub}.get, ice_hosts=["127.0.0.1"], start=args.start)

        async def handle(request: web.Request) -> web.Response:
            _, answer = await egress.offer("cam", await request.text())
            return web.Response(text=answer, status=201)

        app = web.Application()
        app.router.add_post("/offer", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await egress.offer("cam", await ProbeViewer().offer())  # warm up (imports, the monitor)
        done = mp.get_context("spawn").Event()
        child = mp.get_context("spawn").Process(
            target=_profile_viewers, args=(f"http://127.0.0.1:{port}/offer", args.profile, done)
        )
        idle0, idle_t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(2.0)  # the camera's steady cost (pacing, hub, monitor), subtracted below
        idle_rate = (time.process_time() - idle0) / (time.monotonic() - idle_t0)
        cpu0, t0 = time.process_time(), time.monotonic()
        profiler = cProfile.Profile(time.process_time)  # CPU, not wall time: the machine is shared
        if not args.plain:
            profiler.enable()
        child.start()
        while not done.is_set():
            await asyncio.sleep(0.02)
        profiler.disable()
        cpu = time.process_time() - cpu0 - idle_rate * (time.monotonic() - t0)
        child.join(10)
        await egress.close_all()
        await runner.cleanup()
    if args.plain:
        return [], "", 1000 * cpu / args.profile
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    return profile_table(stats, args.profile), out.getvalue(), 1000 * cpu / args.profile


# --- report -----------------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    values = sorted(values)
    return f"{1000 * values[min(len(values) - 1, int(q * len(values)))]:.0f}"


def summary_row(b: Burst) -> str:
    statuses = [j.status for j in b.joins]
    ok, refused = statuses.count(201), statuses.count(503)
    answers = [j.answer_s for j in b.joins if j.answer_s is not None and j.status == 201]
    firsts = [j.first_frame_s for j in b.joins if j.first_frame_s is not None]
    watchers = f"{min(b.watcher_fps):.1f} / {sum(b.watcher_fps) / len(b.watcher_fps):.1f}" if b.watcher_fps else "-"
    before = f"{sum(b.watcher_fps_before) / len(b.watcher_fps_before):.1f}" if b.watcher_fps_before else "-"
    return (f"| {b.n} in {b.spread_s:g} s | {ok} | {refused} | {len(statuses) - ok - refused} | "
            f"{pct(answers, 0.5)} / {pct(answers, 0.95)} | {b.last_answer_s:.1f} | "
            f"{pct(firsts, 0.5)} / {pct(firsts, 0.95)} | {len(firsts)} | {before} | {watchers} | "
            f"{100 * b.steady_cpu_per_s:.0f} % | {b.cpu_per_join_ms:.2f} |")  # fmt: skip


HEADER = ["| burst | 201 | 503 | other | offer→answer p50 / p95 ms | last answer s | offer→first frame p50 / p95 ms | "
          "with a frame | watchers fps before | watchers fps during (min / mean) | server CPU steady | "
          "server CPU per join ms |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    system = f"{platform.platform()}, Python {platform.python_version()}"
    return f"{platform.node()}: {os.cpu_count()} vCPU, {system}, load {load}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bursts", type=lambda s: [int(x) for x in s.split(",") if x], default=[50, 200])
    p.add_argument("--spread", type=float, default=2.0, help="seconds the offers of a burst are spread over")
    p.add_argument("--watchers", type=int, default=4, help="viewers already watching before each burst")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--tokens", type=int, default=5, help="tokens per client (operators)")
    p.add_argument("--steady", type=float, default=3.0, help="seconds of steady fan-out measured before a burst")
    p.add_argument("--wait", type=float, default=30.0)
    p.add_argument("--gop", type=int, default=50)
    p.add_argument("--settle", type=float, default=4.0)
    p.add_argument("--port", type=int, default=8097)
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--profile", type=int, default=0, help="profile N joins in-process instead")
    p.add_argument("--start", default="live", help="with --profile: the first-picture policy (live, gop, keyframe)")
    p.add_argument("--plain", action="store_true", help="with --profile: CPU per join without cProfile")
    p.add_argument("--label", default="", help="a word for the results file name and title")
    p.add_argument("--results", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    name = f"join-burst-{stamp}{'-' + args.label if args.label else ''}.md"
    lines = [f"# Join burst {args.label}".rstrip(), "", f"- machine: {machine()}",
             f"- command: `.venv/bin/python benchmarks/join_burst.py {shlex.join(argv)}`", ""]  # fmt: skip
    if args.profile:
        table, top, cpu_ms = asyncio.run(profile(args))
        how = "no profiler" if args.plain else "under cProfile, so inflated"
        lines += [f"Server CPU per join (process CPU, {how}): {cpu_ms:.2f} ms", "", *table, "",
                  "```", top[-6000:], "```"]  # fmt: skip
    else:
        results, refusals = asyncio.run(bursts(args))
        lines += [*HEADER, *(summary_row(b) for b in results), "", "Server refusals (first 5):", "```", refusals, "```"]
    print("\n".join(lines))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / name).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
