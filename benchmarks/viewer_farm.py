"""Viewer farm: many aiortc viewers in separate processes against one 720p/1 Mbit/s camera, for the project's
egress and for plain aiortc + MediaRelay in the same run; then admission control past the limit.

    .venv/bin/python benchmarks/viewer_farm.py                          # steps 10,20,40, writes results/
    .venv/bin/python benchmarks/viewer_farm.py --steps 10,25,50,75 --procs 2 --window 8 --cap 40

The camera: a 1280x720 25 fps H.264 clip (testsrc2 + temporal noise, 1 Mbit/s, GOP 50) paced into a hub in
the server process, so only egress is measured (no RTSP ingest). Servers, one at a time, in this process:
- `goldentime`: `mediaserver.egress.Egress` (H.264 passthrough, live bridge, admission control);
- `relay`: plain aiortc: one source track returning the hub's units as `av.Packet`s, `MediaRelay` (unbuffered)
  to every viewer, H.264-only answers.
Viewers: `--procs` processes of aiortc peers whose H.264 decoder is replaced by a frame counter (a real
decode of 720p per viewer would measure the farm, not the server). Per step: server process CPU (share of one
core) over `--window` s, and per viewer frames completed and RTP packets lost (receiver stats). A step is
"clean" when every viewer got >= 97 % of the camera's frames and lost no packet. Viewers per core =
viewers / server CPU at the largest clean step (a linear extrapolation when the step is under one core;
said so in the report).

Past the limit: the goldentime server runs with a session cap (`--cap`) equal to the last step; more viewers
then ask to join, get 503 + Retry-After, and the existing viewers' frame rate is measured before and during.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from feed import Unit, feed, read_units  # noqa: E402

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


# --- the farm (runs in child processes) ----------------------------------------------------------------------


def farm_process(url: str, count: int, window: float, extra: int, hold: bool, conn: Any) -> None:
    """`count` viewers; after they flow, report frames/loss over `window`; with `hold`, `extra` late joiners
    then try to join and every viewer keeps counting for another window (every process holds its viewers, so
    the server stays at its cap)."""
    import aiortc.codecs.h264 as h264

    frames: dict[int, int] = {}

    def counting_decode(self: Any, encoded_frame: Any) -> list[Any]:
        frames[id(self)] = frames.get(id(self), 0) + 1
        return []

    h264.H264Decoder.decode = counting_decode  # type: ignore[method-assign]
    conn.send(asyncio.run(_farm(url, count, window, (extra, hold), frames, conn)))


async def _farm(
    url: str, count: int, window: float, late: tuple[int, bool], frames: dict[int, int], conn: Any
) -> dict[str, Any]:
    extra, hold = late
    from aiohttp import ClientSession

    async with ClientSession() as http:
        joined = await asyncio.gather(*(_join(http, url, retries=5) for _ in range(count)))
        pcs = [pc for pc, status, _ in joined if pc is not None]
        await asyncio.sleep(3.0)  # connected, first keyframe, flowing
        conn.send("ready")
        before, lost0 = dict(frames), await _lost(pcs)
        await asyncio.sleep(window)
        after, lost1 = dict(frames), await _lost(pcs)
        refused: list[tuple[int, str]] = []
        during: dict[int, int] = {}
        if hold:
            joins = await asyncio.gather(*(_join(http, url) for _ in range(extra)))
            refused = [(status, retry) for _, status, retry in joins]
            mark = dict(frames)
            await asyncio.sleep(window)
            during = {k: frames.get(k, 0) - mark.get(k, 0) for k in mark}
            pcs += [pc for pc, _, _ in joins if pc is not None]
        for pc in pcs:
            await pc.close()
    per_viewer = [after.get(k, 0) - before.get(k, 0) for k in after]
    return {"viewers": len(per_viewer), "frames": per_viewer, "lost": max(0, lost1 - lost0),
            "failed": count - len(pcs) if not hold else 0, "refused": refused,
            "during": list(during.values())}  # fmt: skip


async def _join(http: Any, url: str, retries: int = 0) -> tuple[Any, int, str]:
    """One viewer; on 503 it waits Retry-After and tries again, `retries` times (as a WHEP client should)."""
    for _ in range(retries):
        pc, status, retry = await _join_once(http, url)
        if status != 503:
            return pc, status, retry
        await asyncio.sleep(float(retry or 1))
    return await _join_once(http, url)


async def _join_once(http: Any, url: str) -> tuple[Any, int, str]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    with use_ice_hosts(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    async with http.post(url, data=pc.localDescription.sdp) as res:
        body = await res.text()
        if res.status != 201:
            await pc.close()
            return None, res.status, res.headers.get("Retry-After", "")
    await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
    return pc, 201, ""


async def _lost(pcs: list[Any]) -> int:
    lost = 0
    for pc in pcs:
        for receiver in pc.getReceivers():
            for stat in (await receiver.getStats()).values():
                if stat.type == "inbound-rtp":
                    lost += max(0, stat.packetsLost)
    return lost


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
    from aiortc.mediastreams import MediaStreamTrack

    class HubTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self, sub: Subscription) -> None:
            super().__init__()
            self.sub = sub

        async def recv(self) -> av.Packet:
            unit = await self.sub.get()
            assert unit is not None
            packet = av.Packet(unit.data)
            packet.pts, packet.time_base = unit.pts, Fraction(1, 90000)
            return packet

    return HubTrack


_HubTrack = _hub_track_class()


async def serve(offer: Offer) -> tuple[Any, str]:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        try:
            return web.Response(status=201, text=await offer(await request.text()))
        except Overloaded as exc:
            retry = str(exc.refusal.retry_after_s)
            return web.json_response({"error": "overloaded", "detail": str(exc)}, status=503,
                                     headers={"Retry-After": retry})  # fmt: skip

    app = web.Application()
    app.router.add_post("/offer", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/offer"


async def step(units: list[Unit], mode: str, viewers: int, args: argparse.Namespace, extra: int = 0) -> dict[str, Any]:
    hub = Hub("cam")
    feeder = asyncio.create_task(feed(hub, units))
    await asyncio.sleep(0.1)
    cap = AdmissionSettings(max_sessions=viewers) if extra else None
    egress = Egress({"cam": hub}.get, ice_hosts=["127.0.0.1"], admission=cap)
    relay = RelayServer(hub) if mode == "relay" else None
    runner, url = await serve(relay.offer if relay else lambda sdp: _answer(egress, sdp))
    per_proc = [viewers // args.procs + (i < viewers % args.procs) for i in range(args.procs)]
    pipes, procs = [], []
    for i, n in enumerate(per_proc):
        ours, theirs = mp.Pipe()
        late = extra if i == 0 else 0
        proc = mp.get_context("spawn").Process(
            target=farm_process, args=(url, n, args.window, late, bool(extra), theirs)
        )
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    loop = asyncio.get_running_loop()
    for pipe in pipes:
        assert await loop.run_in_executor(None, pipe.recv) == "ready"
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(args.window)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
    results = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
    for proc in procs:
        proc.join()
    await runner.cleanup()
    await egress.close_all()
    if relay:
        await relay.close()
    feeder.cancel()
    return _summarise(mode, viewers, cpu, results, args.window)


async def _answer(egress: Egress, sdp: str) -> str:
    return (await egress.offer("cam", sdp))[1]


def _summarise(mode: str, viewers: int, cpu: float, results: list[dict[str, Any]], window: float) -> dict[str, Any]:
    frames = [f for r in results for f in r["frames"]]
    during = [f for r in results for f in r["during"]]
    refused = [x for r in results for x in r["refused"]]
    expected = FPS * window
    row = {
        "mode": mode, "viewers": viewers, "connected": len(frames), "cpu": cpu,
        "fps_min": min(frames, default=0) / window, "fps_mean": sum(frames) / max(1, len(frames)) / window,
        "lost": sum(r["lost"] for r in results),
        "clean": len(frames) == viewers and min(frames, default=0) >= CLEAN_FRACTION * expected
        and sum(r["lost"] for r in results) == 0,
        "refused": refused, "during_fps_min": min(during, default=0) / window if during else None,
    }  # fmt: skip
    late = f"; late joiners {refused}, existing fps min during {row['during_fps_min']:.1f}" if refused else ""
    print(f"{mode:10} {viewers:4} viewers: server CPU {cpu:6.1%}, fps min {row['fps_min']:.1f} mean "
          f"{row['fps_mean']:.1f}, lost {row['lost']}, clean {row['clean']}{late}")  # fmt: skip
    return row


# --- report ----------------------------------------------------------------------------------------------------


def per_core(rows: list[dict[str, Any]], mode: str) -> str:
    clean = [r for r in rows if r["mode"] == mode and r["clean"] and not r["refused"]]
    if not clean:
        return "no clean step"
    best = max(clean, key=lambda r: r["viewers"])
    estimate = best["viewers"] / best["cpu"] if best["cpu"] > 0 else float("inf")
    how = "extrapolated" if best["cpu"] < 0.95 else "measured"
    return f"{estimate:.0f} ({how} from {best['viewers']} viewers at {best['cpu']:.0%} of a core)"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs ({model}), {platform.platform()}, load average at start {load[0]:.2f}"


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], started: str) -> Path:
    lines = [
        "# Viewer farm: one 720p / 1 Mbit/s camera, aiortc viewers in separate processes",
        "",
        f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}",
        f"- machine: {started}",
        f"- command: `python benchmarks/viewer_farm.py {shlex.join(sys.argv[1:])}`",
        f"- viewers in {args.procs} processes (decoder replaced by a frame counter); {args.window:.0f} s windows;"
        f" clean = every viewer >= {CLEAN_FRACTION:.0%} of 25 fps and 0 RTP packets lost",
        "",
        "| server | viewers | connected | server CPU (of one core) | viewer fps min / mean | packets lost | clean |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if not r["refused"]:
            lines.append(f"| {r['mode']} | {r['viewers']} | {r['connected']} | {r['cpu']:.1%} | "
                         f"{r['fps_min']:.1f} / {r['fps_mean']:.1f} | {r['lost']} | {r['clean']} |")  # fmt: skip
    lines += ["", f"Viewers per core at 0 % loss: goldentime {per_core(rows, 'goldentime')}; "
              f"plain aiortc + MediaRelay {per_core(rows, 'relay')}."]  # fmt: skip
    for r in rows:
        if r["refused"]:
            statuses = sorted({f"{s} (Retry-After {retry or '-'})" for s, retry in r["refused"]})
            lines += ["", f"Past the limit (session cap {r['viewers']}): {len(r['refused'])} late joiners got "
                      f"{', '.join(statuses)}; existing viewers: {r['fps_min']:.1f} fps min before, "
                      f"{r['during_fps_min']:.1f} fps min while they were refused."]  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"viewer-farm-{dt.datetime.now():%Y-%m-%d-%H%M}.md"
    out.write_text("\n".join(lines) + "\n")
    return out


async def run(args: argparse.Namespace, units: list[Unit]) -> list[dict[str, Any]]:
    steps = [int(n) for n in args.steps.split(",")]
    rows = []
    for mode in ("goldentime", "relay"):
        for viewers in steps:
            rows.append(await step(units, mode, viewers, args))
    rows.append(await step(units, "goldentime", args.cap or steps[-1], args, extra=args.late))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="10,20,40", help="viewer counts")
    parser.add_argument("--procs", type=int, default=2, help="viewer processes")
    parser.add_argument("--window", type=float, default=6.0, help="seconds measured per step")
    parser.add_argument("--cap", type=int, default=0, help="session cap for the admission run (default: last step)")
    parser.add_argument("--late", type=int, default=5, help="viewers that try to join past the cap")
    args = parser.parse_args(argv)
    started = machine()
    with tempfile.TemporaryDirectory() as tmp:
        units = make_units(Path(tmp), 8)
        rows = asyncio.run(run(args, units))
    print(f"wrote {write_report(args, rows, started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
