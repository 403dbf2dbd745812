"""Viewer farm: many WebRTC viewers in separate processes against one 720p/1 Mbit/s camera, for the project's
egress and for plain aiortc + MediaRelay in the same run; then admission control past the limit.

    .venv/bin/python benchmarks/viewer_farm.py --steps 100,250,500,750,1000    # writes results/
    .venv/bin/python benchmarks/viewer_farm.py --steps 50,150 --window 5       # a short check
    .venv/bin/python benchmarks/viewer_farm.py --check 20 --steps ''           # probe vs aiortc's own counts

The camera: a 1280x720 25 fps H.264 clip (testsrc2 + temporal noise, 1 Mbit/s, GOP 50) paced into a hub in
the server process, so only egress is measured (no RTSP ingest). Servers, one at a time, in this process:
- `goldentime`: `mediaserver.egress.Egress` (H.264 passthrough, live bridge, admission control);
- `relay`: plain aiortc: one source track returning the hub's units as `av.Packet`s, `MediaRelay` (unbuffered)
  to every viewer, H.264-only answers.

Viewers (`--viewer`): `probe` (default, viewer_probe.py): a real WebRTC peer (aiortc does SDP, ICE and
consent, DTLS-SRTP, RTCP) whose incoming media skips aiortc's per-packet pipeline: SRTP is decrypted and its
RTP headers counted (packets, loss by sequence, frames by marker bit). `aiortc`: the full aiortc receive
path with the decoder replaced by a frame counter; it costs about what an aiortc sender does, so two cores
cannot load the server to one core with it. Up to `--per-proc` viewers share a farm process; joins run in
parallel (`--join-concurrency` at a time in all), a 503 is retried after its Retry-After.

Per step, over the same `--window` s: the server process's CPU (share of one core), the frames it sent per
viewer per second (goldentime), the farm's CPU (all its processes, in cores, and per viewer), the worst event
loop lag of the server and of each farm process (a farm falling behind its sockets shows it here first: the
kernel buffers seconds of a viewer's packets before any is lost), and per viewer the frames and RTP packets
lost in the window. `--check N` first runs N viewers that also hand every packet to aiortc's own receiver and
compares the two counts (half of them drop packets on purpose). A step is "clean" when every
viewer joined, got >= 97 % of the camera's frames and lost no packet; a server's ramp stops at its first
step that is not (`--keep-going` runs them all). Viewers per core = viewers / server CPU at the largest clean
step (a linear extrapolation when that step is under one core; said so in the report).

Past the limit: the goldentime server runs with a session cap (`--cap`, default: its largest clean step);
`--late` more viewers then ask to join, get 503 + Retry-After, and the existing viewers' frame rate is
measured before and during.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import math
import multiprocessing as mp
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from helpers.feed import Unit, feed, read_units  # noqa: E402

from mediaserver.admission import AdmissionSettings  # noqa: E402
from mediaserver.egress import Egress, Overloaded, h264_capabilities, use_ice_hosts  # noqa: E402
from mediaserver.hub import Hub, Subscription  # noqa: E402

FPS = 25
CLEAN_FRACTION = 0.97

Offer = Callable[[str], Awaitable[str]]


def make_units(tmp: Path, seconds: int) -> list[Unit]:
    path = tmp / "cam.h264"
    x264 = "keyint=50:min-keyint=50:scenecut=0:repeat-headers=1:slices=1"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=1280x720:rate={FPS},noise=alls=12:allf=t", "-t", str(seconds),
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast",
                    "-bf", "0", "-x264-params", x264, "-b:v", "1M", "-maxrate", "1M", "-bufsize", "1M",
                    "-f", "h264", str(path)], check=True)  # fmt: skip
    return read_units(path)


def run_loop(coro: Coroutine[Any, Any, Any], loop: str) -> Any:
    """The server and the farm run on the loop the media workers use in production (uvloop) unless told."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# --- the farm (runs in child processes) ----------------------------------------------------------------------


@dataclass(frozen=True)
class FarmConfig:
    url: str
    count: int  # viewers this process holds
    viewer: str  # probe | aiortc | tee
    concurrency: int  # joins in flight at once
    join_timeout: float  # give up joining (503s included) after this long
    settle: float  # seconds between the last join and the window
    window: float
    late: int = 0  # viewers that try to join once, past the cap, during a second window
    hold: bool = False  # measure that second window
    loop: str = "uvloop"


def farm_process(cfg: FarmConfig, conn: Any) -> None:
    conn.send(run_loop(_farm(cfg, conn), cfg.loop))


async def _farm(cfg: FarmConfig, conn: Any) -> dict[str, Any]:
    from aiohttp import ClientSession, TCPConnector

    loop = asyncio.get_running_loop()
    async with ClientSession(connector=TCPConnector(limit=0)) as http:
        t0 = time.monotonic()
        cpu0 = time.process_time()
        slots = asyncio.Semaphore(cfg.concurrency)
        joins = await asyncio.gather(*(_join(http, cfg, slots, t0 + cfg.join_timeout) for _ in range(cfg.count)))
        join_s, join_cpu = time.monotonic() - t0, time.process_time() - cpu0
        viewers = [v for v, _ in joins if v is not None]
        await asyncio.sleep(cfg.settle)
        conn.send("ready")
        await loop.run_in_executor(None, conn.recv)  # go: every process measures the same window
        before, cpu0, t0 = [v.snapshot() for v in viewers], time.process_time(), time.monotonic()
        lag = await loop_lag(cfg.window)
        after, cpu, wall = [v.snapshot() for v in viewers], time.process_time() - cpu0, time.monotonic() - t0
        nviewers, errors = len(viewers), sum(v.errors for v in viewers)
        late, during = await _past_the_limit(http, cfg, viewers) if cfg.hold else ([], [])
        check = await _check(viewers) if cfg.viewer == "tee" else []
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
    window = [tuple(a - b for a, b in zip(x, y, strict=True)) for x, y in zip(after, before, strict=True)]
    return {"viewers": nviewers, "fps": [w[0] / wall for w in window], "lost": [w[2] for w in window],
            "packets": sum(w[1] for w in window), "cpu": cpu / wall, "lag_ms": lag, "join_s": join_s,
            "join_cpu": join_cpu, "refusals": sum(n for _, n in joins), "failed": cfg.count - nviewers,
            "errors": errors, "late": late,
            "during": during, "check": check}  # fmt: skip


async def loop_lag(seconds: float, interval: float = 0.05) -> float:
    """Sleep `seconds`; return how late (ms) the most late of the `interval` timers fired meanwhile: a farm
    that falls behind its sockets shows it here before it loses packets (the kernel buffers ~10 s a viewer)."""
    worst, end = 0.0, time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        due = now + interval
        await asyncio.sleep(interval)
        worst = max(worst, time.monotonic() - due)
    return 1000 * worst


_made = 0  # viewers this process made (the tee check alternates lossless and lossy ones)


def _new_viewer(kind: str) -> Any:
    """tee (the check): every other viewer drops 1 packet in 37 for good, so losses are compared too."""
    from lib.viewer_probe import AiortcViewer, ProbeViewer

    global _made
    _made += 1
    if kind == "tee":
        return ProbeViewer(tee=True, drop_every=37 if _made % 2 else 0)
    return AiortcViewer() if kind == "aiortc" else ProbeViewer()


async def _join(http: Any, cfg: FarmConfig, slots: asyncio.Semaphore, deadline: float) -> tuple[Any, int]:
    """One viewer, connected (ICE + DTLS) or None; a 503 is retried after Retry-After until `deadline`, as a
    WHEP client should. At most `slots` joins are in flight. Returns (viewer or None, 503s seen)."""
    refusals = 0
    while True:
        async with slots:
            viewer, status, retry = await _join_once(http, cfg.url, cfg.viewer, max(1.0, deadline - time.monotonic()))
        if viewer is not None or status != 503:
            return viewer, refusals
        refusals += 1
        if time.monotonic() + retry > deadline:
            return None, refusals
        await asyncio.sleep(retry)


async def _join_once(http: Any, url: str, kind: str, timeout: float = 15.0) -> tuple[Any, int, float]:
    """(connected viewer or None, HTTP status (0: no answer), Retry-After in seconds)."""
    from aiohttp import ClientError, ClientTimeout

    viewer = _new_viewer(kind)
    try:
        async with http.post(url, data=await viewer.offer(), timeout=ClientTimeout(total=30)) as res:
            body = await res.text()
            status, retry = res.status, float(res.headers.get("Retry-After") or 1)
    except (ClientError, TimeoutError):
        status, retry = 0, 1.0
    if status == 201:
        await viewer.accept(body)
        if await _connected(viewer.pc, min(timeout, 15.0)):
            return viewer, status, retry
    await viewer.close()
    return None, status, retry


async def _connected(pc: Any, timeout: float) -> bool:
    done = asyncio.Event()

    def on_state() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            done.set()

    pc.on("connectionstatechange", on_state)
    on_state()
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        pass
    pc.remove_listener("connectionstatechange", on_state)
    return bool(pc.connectionState == "connected")


async def _past_the_limit(
    http: Any, cfg: FarmConfig, viewers: list[Any]
) -> tuple[list[tuple[int, float]], list[float]]:
    """A second window; `cfg.late` new viewers try to join once at its start. Returns their (status, retry)
    and each existing viewer's frame rate over the window."""
    mark, t0 = [v.snapshot()[0] for v in viewers], time.monotonic()
    joins = await asyncio.gather(*(_join_once(http, cfg.url, cfg.viewer) for _ in range(cfg.late)))
    await asyncio.sleep(max(0.0, t0 + cfg.window - time.monotonic()))
    wall = time.monotonic() - t0
    during = [(v.snapshot()[0] - m) / wall for v, m in zip(viewers, mark, strict=True)]
    for viewer, _, _ in joins:
        if viewer is not None:  # admitted after all: count it as a viewer to close
            viewers.append(viewer)
    return [(status, retry) for _, status, retry in joins], during


async def _check(viewers: list[Any]) -> list[tuple[int, ...]]:
    """tee viewers: stop taking packets, let aiortc finish the ones it has, then both counts side by side:
    (probe frames, aiortc frames, probe packets, aiortc packets, probe lost, aiortc lost, SRTP errors,
    packets dropped on purpose)."""
    for viewer in viewers:
        viewer.frozen = True
    await asyncio.sleep(0.5)
    rows: list[tuple[int, ...]] = []
    for viewer in viewers:
        frames, packets, lost, _ = viewer.snapshot()
        a_frames, a_packets, a_lost = viewer.aiortc_counts()
        rows.append((frames, a_frames, packets, a_packets, lost, a_lost, viewer.counter.errors, viewer.dropped))
    return rows


# --- the servers -------------------------------------------------------------------------------------------


class RelayServer:
    """Plain aiortc: one source track from the hub, MediaRelay to every viewer (no GOP cache, no bridge)."""

    def __init__(self, hub: Hub) -> None:
        from aiortc.contrib.media import MediaRelay

        self.relay = MediaRelay()
        self.source = _HubTrack(hub.subscribe())
        self.pcs: list[Any] = []

    async def offer(self, sdp: str) -> str:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = pc.addTransceiver(self.relay.subscribe(self.source, buffered=False), direction="sendonly")
        transceiver.setCodecPreferences(h264_capabilities())
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        with use_ice_hosts(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createAnswer())
        self.pcs.append(pc)
        return str(pc.localDescription.sdp)

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()
        self.source.stop()
        await asyncio.sleep(0.1)  # MediaRelay's reader task ends on the source's end


def _hub_track_class() -> type:
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class HubTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self, sub: Subscription) -> None:
            super().__init__()
            self.sub = sub

        async def recv(self) -> av.Packet:
            unit = await self.sub.get()
            if unit is None:  # stopped: MediaRelay's reader ends on this
                raise MediaStreamError
            packet = av.Packet(unit.data)
            packet.pts, packet.time_base = unit.pts, Fraction(1, 90000)
            return packet

        def stop(self) -> None:
            self.sub.close()
            super().stop()

    return HubTrack


_HubTrack = _hub_track_class()


async def serve(offer: Offer) -> tuple[Any, str]:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        try:
            return web.Response(status=201, text=await offer(await request.text()))
        except Overloaded as exc:
            retry = str(exc.retry_after_s)
            return web.json_response({"error": "overloaded", "detail": str(exc)}, status=503,
                                     headers={"Retry-After": retry})  # fmt: skip

    app = web.Application()
    app.router.add_post("/offer", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/offer"


async def step(units: list[Unit], mode: str, viewers: int, args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    """One server (`mode`), `viewers` viewers. kw: `extra` late joiners past a session cap of `viewers`,
    `viewer` to override --viewer (the check uses tee viewers)."""
    extra, kind = kw.get("extra", 0), kw.get("viewer", args.viewer)
    hub = Hub("cam")
    feeder = asyncio.create_task(feed(hub, units))
    await asyncio.sleep(0.1)
    cap = AdmissionSettings(max_sessions=viewers) if extra else None
    egress = Egress({"cam": hub}.get, ice_hosts=["127.0.0.1"], admission=cap)
    relay = RelayServer(hub) if mode == "relay" else None
    runner, url = await serve(relay.offer if relay else lambda sdp: _answer(egress, sdp))
    procs = max(1, math.ceil(viewers / args.per_proc))
    base = FarmConfig(url, 0, kind, max(1, args.join_concurrency // procs), args.join_timeout, args.settle,
                      args.window, loop=args.loop)  # fmt: skip
    configs = [replace(base, count=viewers // procs + (i < viewers % procs)) for i in range(procs)]
    configs[0] = replace(configs[0], late=extra, hold=bool(extra))
    configs[1:] = [replace(c, hold=bool(extra)) for c in configs[1:]]
    loop = asyncio.get_running_loop()
    pipes, children = [], []
    t0 = time.monotonic()
    for cfg in configs:
        ours, theirs = mp.Pipe()
        child = mp.get_context("spawn").Process(target=farm_process, args=(cfg, theirs))
        child.start()
        pipes.append(ours)
        children.append(child)
    for pipe in pipes:
        assert await loop.run_in_executor(None, pipe.recv) == "ready"
    joined_s = time.monotonic() - t0
    for pipe in pipes:
        pipe.send("go")
    cpu0, t0, sent0 = time.process_time(), time.monotonic(), _frames_sent(egress)
    lag = await loop_lag(args.window)
    wall = time.monotonic() - t0
    cpu, sent = (time.process_time() - cpu0) / wall, (_frames_sent(egress) - sent0) / wall
    sessions = egress.sessions  # now: the viewers close once they have measured
    server = {"cpu": cpu, "lag_ms": lag, "sent_fps": sent / viewers if not relay else None,
              "shared": sum(1 for s in sessions if s.get("shared_fanout")),
              "overflows": sum(s.get("overflows", 0) for s in sessions)}  # fmt: skip
    results = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
    for child in children:
        child.join()
    await runner.cleanup()
    await egress.close_all()
    if relay:
        await relay.close()
    feeder.cancel()
    return _summarise(mode, viewers, server, results, joined_s, args.window)


def _frames_sent(egress: Egress) -> int:
    return sum(s.get("frames_sent", 0) for s in egress.sessions)


async def _answer(egress: Egress, sdp: str) -> str:
    return (await egress.offer("cam", sdp))[1]


def _summarise(mode: str, viewers: int, server: dict[str, Any], results: list[dict[str, Any]], joined_s: float,
               window: float) -> dict[str, Any]:  # fmt: skip
    cpu = server["cpu"]
    fps = [f for r in results for f in r["fps"]]
    lost = sum(n for r in results for n in r["lost"])
    during = [f for r in results for f in r["during"]]
    farm_cpu = sum(r["cpu"] for r in results)
    row_errors = sum(r["errors"] for r in results)
    row = {
        "mode": mode, "viewers": viewers, "connected": len(fps), "cpu": cpu, "farm_cpu": farm_cpu,
        "farm_procs": len(results), "joined_s": joined_s, "refusals": sum(r["refusals"] for r in results),
        "join_cpu": sum(r["join_cpu"] for r in results),
        "fps_min": min(fps, default=0.0), "fps_mean": sum(fps) / max(1, len(fps)), "lost": lost,
        "packets": sum(r["packets"] for r in results) / window, "errors": sum(r["errors"] for r in results),
        "clean": len(fps) == viewers and min(fps, default=0) >= CLEAN_FRACTION * FPS and lost == 0
        and row_errors == 0,
        "late": [x for r in results for x in r["late"]], "during_fps_min": min(during) if during else None,
        "check": [x for r in results for x in r["check"]], "server_lag_ms": server["lag_ms"],
        "sent_fps": None if server["sent_fps"] is None else round(server["sent_fps"], 1),
        "shared": server["shared"], "overflows": server["overflows"],
        "farm_lag_ms": max((r["lag_ms"] for r in results), default=0.0),
    }  # fmt: skip
    late = f"; late joiners {Counter(s for s, _ in row['late'])}, existing fps min during {min(during):.1f}" if (
        during) else ""  # fmt: skip
    print(f"{mode:10} {viewers:5} viewers: {len(fps)} connected in {joined_s:.0f} s ({row['refusals']} x 503), "
          f"server CPU {cpu:6.1%}, farm CPU {farm_cpu:6.1%} in {len(results)} procs, fps min "
          f"{row['fps_min']:.1f} mean {row['fps_mean']:.1f}, lost {lost}, SRTP errors {row_errors}, loop lag max "
          f"server {row['server_lag_ms']:.0f} ms farm {row['farm_lag_ms']:.0f} ms, sent {row['sent_fps'] or '-'} "
          f"fps, {row['shared']} on the shared fan-out, {row['overflows']} overflows, clean {row['clean']}{late}",
          flush=True)  # fmt: skip
    return row


# --- report ----------------------------------------------------------------------------------------------------


def per_core(rows: list[dict[str, Any]], mode: str) -> str:
    clean = [r for r in rows if r["mode"] == mode and r["clean"] and not r["late"] and not r["check"]]
    if not clean:
        return "no clean step"
    best = max(clean, key=lambda r: r["viewers"])
    estimate = best["viewers"] / best["cpu"] if best["cpu"] > 0 else float("inf")
    how = "extrapolated" if best["cpu"] < 0.95 else "measured"
    return f"{estimate:.0f} ({how} from {best['viewers']} viewers at {best['cpu']:.0%} of a core)"


def farm_cost(rows: list[dict[str, Any]]) -> str:
    big = max((r for r in rows if r["connected"] and not r["late"] and not r["check"]), key=lambda r: r["connected"],
              default=None)  # fmt: skip
    if big is None:
        return "no viewers connected"
    each = big["farm_cpu"] / big["connected"]
    return (f"{each:.3%} of a core per viewer ({1 / each:.0f} viewers per farm core) at {big['connected']} "
            f"viewers in {big['farm_procs']} processes; joining cost the farm {big['join_cpu']:.1f} CPU-s "
            f"({1000 * big['join_cpu'] / big['connected']:.1f} ms per viewer)")  # fmt: skip


def check_lines(rows: list[dict[str, Any]]) -> list[str]:
    checks = [c for r in rows for c in r["check"]]
    if not checks:
        return []

    def agrees(pf: int, af: int, pp: int, ap: int, pl: int, al: int, err: int, dropped: int) -> bool:
        frames_ok = abs(pf - af) <= 1 or dropped > 0  # a dropped packet breaks a frame: each side counts it apart
        return frames_ok and pp == ap and pl == al and err == 0 and (pl > 0) == (dropped > 0)

    agree = sum(1 for c in checks if agrees(*c))
    lines = ["", f"Probe vs aiortc's own receiver on the same packets (tee: each decrypted packet counted, then "
             f"handed to aiortc's pipeline; every other viewer drops the packets whose sequence number is a multiple "
             f"of 37, retransmissions too, before both): {agree} of "
             f"{len(checks)} viewers agree (packets and lost equal, lost > 0 exactly where packets were dropped, "
             "frames within 1 where none were, no SRTP error).", "",
             "| viewer | frames probe / aiortc | packets probe / aiortc | lost probe / aiortc | dropped "
             "| SRTP errors |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for i, (pf, af, pp, ap, pl, al, err, dropped) in enumerate(checks):
        lines.append(f"| {i} | {pf} / {af} | {pp} / {ap} | {pl} / {al} | {dropped} | {err} |")
    return lines


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs ({model}), {platform.platform()}, load average at start {load[0]:.2f}"


def _table_row(r: dict[str, Any]) -> str:
    mode = f"{r['mode']} (tee check: half drop packets on purpose)" if r["check"] else r["mode"]
    sent = "-" if r["sent_fps"] is None else f"{r['sent_fps']:.1f} ({r['shared']} shared)"
    each = r["farm_cpu"] / max(1, r["connected"])
    return (f"| {mode} | {r['viewers']} | {r['connected']} | {r['joined_s']:.0f} s ({r['refusals']}) | "
            f"{r['cpu']:.1%} | {sent} | {r['farm_cpu']:.2f} ({r['farm_procs']}), {each:.3%} | "
            f"{r['server_lag_ms']:.0f} / {r['farm_lag_ms']:.0f} ms | {r['packets']:.0f} | "
            f"{r['fps_min']:.1f} / {r['fps_mean']:.1f} | {r['lost']} ({r['errors']}) | {r['clean']} |")  # fmt: skip


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], started: str) -> Path:
    lines = [
        "# Viewer farm: one 720p / 1 Mbit/s camera, WebRTC viewers in separate processes",
        "",
        f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}",
        f"- machine: {started}; load average at the end {os.getloadavg()[0]:.2f}",
        f"- command: `python benchmarks/viewer_farm.py {shlex.join(sys.argv[1:])}`",
        f"- viewers: `{args.viewer}` (see viewer_farm.py), up to {args.per_proc} per farm process, "
        f"{args.join_concurrency} joins in flight; event loop {args.loop}; {args.window:.0f} s windows; "
        f"clean = every viewer joined, >= {CLEAN_FRACTION:.0%} of 25 fps, 0 RTP packets lost, 0 SRTP errors",
        "",
        "| server | viewers | connected | joined in (503s) | server CPU (of one core) | server sent fps per viewer "
        "(viewers on the shared fan-out) "
        "| farm CPU: cores (procs), per viewer | loop lag max: server / farm | RTP packets/s received "
        "| viewer fps min / mean | packets lost (SRTP errors) | clean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_table_row(r) for r in rows if not r["late"]]
    if any(not r["check"] and not r["late"] for r in rows):
        lines += ["", f"Viewers per core at 0 % loss: goldentime {per_core(rows, 'goldentime')}; "
                  f"plain aiortc + MediaRelay {per_core(rows, 'relay')}.", "", f"Farm: {farm_cost(rows)}."]  # fmt: skip
    for r in rows:
        if r["late"]:
            statuses = ", ".join(f"{n} x {s}" for s, n in sorted(Counter(s for s, _ in r["late"]).items()))
            retry = sorted({f"{x:g}" for s, x in r["late"] if s == 503}) or ["-"]
            lines += ["", f"Past the limit (session cap {r['viewers']}, {r['connected']} viewers): {len(r['late'])} "
                      f"late joiners got {statuses} (Retry-After {', '.join(retry)} s); existing viewers: "
                      f"{r['fps_min']:.1f} fps min before, {r['during_fps_min']:.1f} fps min while they were "
                      f"refused; {r['lost']} packets lost before."]  # fmt: skip
    lines += check_lines(rows)
    out = ROOT / "benchmarks" / "results" / f"viewer-farm-{dt.datetime.now():%Y-%m-%d-%H%M}.md"
    out.write_text("\n".join(lines) + "\n")
    return out


async def run(args: argparse.Namespace, units: list[Unit]) -> list[dict[str, Any]]:
    rows = [await step(units, "goldentime", args.check, args, viewer="tee")] if args.check else []
    steps = [int(n) for n in args.steps.split(",") if n]
    modes = args.servers.split(",")
    for mode in modes if steps else []:
        for viewers in steps:
            rows.append(await step(units, mode, viewers, args))
            if not rows[-1]["clean"] and not args.keep_going:
                break  # past its limit: larger steps only take longer to fail
    if args.late and "goldentime" in modes and (steps or args.cap):
        clean = [r["viewers"] for r in rows if r["mode"] == "goldentime" and r["clean"] and not r["check"]]
        cap = args.cap or max(clean, default=steps[0])
        rows.append(await step(units, "goldentime", cap, args, extra=args.late))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="100,250,500,750,1000", help="viewer counts")
    parser.add_argument("--servers", default="goldentime,relay", help="which servers, in order")
    parser.add_argument("--viewer", choices=("probe", "aiortc"), default="probe", help="viewer kind (see above)")
    parser.add_argument("--per-proc", type=int, default=0, help="viewers per farm process (default: 500 probe, "
                        "75 aiortc)")  # fmt: skip
    parser.add_argument("--join-concurrency", type=int, default=16, help="joins in flight, all processes")
    parser.add_argument("--join-timeout", type=float, default=120.0, help="seconds a step may take to join")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between joining and the window")
    parser.add_argument("--window", type=float, default=8.0, help="seconds measured per step")
    parser.add_argument("--keep-going", action="store_true", help="run a server's steps past its first unclean one")
    parser.add_argument("--cap", type=int, default=0, help="session cap for the admission run (default: the "
                        "largest clean goldentime step; with --steps '': only that run)")  # fmt: skip
    parser.add_argument("--late", type=int, default=10, help="viewers that try to join past the cap (0: skip)")
    parser.add_argument("--check", type=int, default=0, help="first compare N probe viewers with aiortc's own "
                        "counts on the same packets (with --steps '': only that)")  # fmt: skip
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    args.per_proc = args.per_proc or (75 if args.viewer == "aiortc" else 500)
    logging.getLogger("mediaserver.egress").setLevel(logging.ERROR)  # refusals: counted per step instead
    started = machine()
    with tempfile.TemporaryDirectory() as tmp:
        units = make_units(Path(tmp), 8)
        rows = run_loop(run(args, units), args.loop)
    print(f"wrote {write_report(args, rows, started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
