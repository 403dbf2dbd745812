"""Transcoding cost: our H.265 -> H.264 pipeline against the ffmpeg CLI, and one transcode serving many viewers.

    .venv/bin/python benchmarks/transcode_bench.py                 # both parts, writes benchmarks/results/
    .venv/bin/python benchmarks/transcode_bench.py --seconds 20 --viewers 1,20 --window 10

Part 1, throughput per core. A 720p25 H.265 clip (testsrc2 with temporal noise, like a real sensor; 2 Mbit/s,
2 s GOP, no B-frames) is transcoded to H.264 by
- ours: `mediaserver.bridge.Transcoder` (PyAV: libavcodec's hevc decoder, libx264) fed access unit by
  access unit, exactly as a shared transcode runs in the server (one unit in, one frame out);
- ffmpeg: `ffmpeg -c:v hevc -i clip.hevc -c:v libx264` with the same encoder settings (ultrafast,
  zerolatency, baseline, same bit rate, no scene-cut keyframes), output discarded;
both with 1 thread per codec (what "per core" means) and with the codecs' automatic threading. Throughput =
frames per CPU-second (user + system, the whole process for ours, the child for ffmpeg), best of `--repeat`.
"Pipelines per core" = that / 25 fps.

Part 2, one transcode, 1 vs N viewers: the clip is paced at 25 fps into a hub; N aiortc viewers in a separate
process (their H.264 decoder replaced by a frame counter, so the viewers cost little) ask for the H.265
camera over WHEP-style offers. Measured over `--window` seconds in the server: process CPU, the transcode's
own CPU (thread time inside the Transcoder), frames encoded, and frames each viewer completed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.feed import Unit, feed, read_units  # noqa: E402

from mediaserver.bridge import Transcoder  # noqa: E402
from mediaserver.egress import Egress  # noqa: E402
from mediaserver.hub import Hub  # noqa: E402

FPS = 25
BIT_RATE = 2_000_000
X264 = ["-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline", "-x264-params", "scenecut=0"]


def make_clip(path: Path, seconds: int) -> Path:
    source = f"testsrc2=size=1280x720:rate={FPS},noise=alls=12:allf=t"
    x265 = "log-level=error:keyint=50:min-keyint=50:scenecut=0:bframes=0:repeat-headers=1"
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds), "-pix_fmt", "yuv420p",
           "-c:v", "libx265", "-preset", "veryfast", "-b:v", "2M", "-x265-params", x265,
           "-f", "hevc", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


# --- part 1: frames per CPU-second, ours vs ffmpeg --------------------------------------------------------


def ours(units: list[Unit], threads: int) -> float:
    """Frames per CPU-second of our transcoder (whole process CPU: every codec thread counts)."""
    transcoder = Transcoder("h265", BIT_RATE, Fraction(FPS), threads=threads)
    transcoder.encode(transcoder.decode(units[:1]) or _fail(), units[0].pts, True)  # warm up: open the encoder
    started = time.process_time()
    frames = 0
    for unit in units[1:]:
        frame = transcoder.decode([unit])
        if frame is not None:
            transcoder.encode(frame, unit.pts, False)
            frames += 1
    return frames / (time.process_time() - started)


def _fail() -> Any:
    raise RuntimeError("the clip's first unit did not decode")


def ffmpeg_cmd(clip: Path, threads: int) -> list[str]:
    return ["ffmpeg", "-v", "error", "-nostdin", "-threads", str(threads), "-c:v", "hevc", "-i", str(clip),
            "-c:v", "libx264", "-threads", str(threads), *X264, "-b:v", str(BIT_RATE), "-g", "1000000",
            "-f", "h264", "-y", os.devnull]  # fmt: skip


def ffmpeg(clip: Path, frames: int, threads: int) -> float:
    """Frames per CPU-second of the ffmpeg CLI (the child's user + system time)."""
    proc = subprocess.Popen(ffmpeg_cmd(clip, threads))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.returncode}")
    return frames / (usage.ru_utime + usage.ru_stime)


def part1(clip: Path, units: list[Unit], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for threads in (1, 0):
        mine = max(ours(units, threads) for _ in range(repeat))
        theirs = max(ffmpeg(clip, len(units), threads) for _ in range(repeat))
        rows.append({"threads": threads or "auto", "ours_fps_per_cpu_s": mine, "ffmpeg_fps_per_cpu_s": theirs,
                     "ratio": mine / theirs})  # fmt: skip
        label = threads or "auto"
        print(f"threads={label}: ours {mine:.0f} frames/CPU-s, ffmpeg {theirs:.0f}, ratio {mine / theirs:.3f}")
    return rows


# --- part 2: one transcode, 1 vs N viewers -----------------------------------------------------------------


def viewer_process(url: str, count: int, seconds: float, out: Any) -> None:
    """N aiortc viewers in this process; each counts frames completed by its (replaced) decoder."""
    import aiortc.codecs.h264 as h264
    from aiohttp import ClientSession
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from mediaserver.egress import use_ice_hosts

    counts: dict[int, int] = {}

    def counting_decode(self: Any, encoded_frame: Any) -> list[Any]:
        counts[id(self)] = counts.get(id(self), 0) + 1
        return []

    h264.H264Decoder.decode = counting_decode  # type: ignore[method-assign]

    async def run() -> list[int]:
        pcs = []
        async with ClientSession() as http:
            for _ in range(count):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pc.addTransceiver("video", direction="recvonly")
                with use_ice_hosts(["127.0.0.1"]):
                    await pc.setLocalDescription(await pc.createOffer())
                async with http.post(url, data=pc.localDescription.sdp) as res:
                    answer = await res.text()
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                pcs.append(pc)
            await asyncio.sleep(2.0)  # connected and flowing
            before = dict(counts)
            out.send("measuring")
            await asyncio.sleep(seconds)
            after = dict(counts)
            for pc in pcs:
                await pc.close()
        return [after.get(k, 0) - before.get(k, 0) for k in after]

    out.send(asyncio.run(run()))


async def serve_offers(egress: Egress, camera: str, profile: str) -> tuple[Any, str]:
    from aiohttp import web

    async def offer(request: web.Request) -> web.Response:
        _, answer = await egress.offer(camera, await request.text(), profile)
        return web.Response(text=answer)

    app = web.Application()
    app.router.add_post("/offer", offer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/offer"


async def one_run(units: list[Unit], viewers: int, window: float, profile: str) -> dict[str, Any]:
    hub = Hub("cam265", codec="h265")
    feeder = asyncio.create_task(feed(hub, units))
    egress = Egress({"cam265": hub}.get, ice_hosts=["127.0.0.1"])
    runner, url = await serve_offers(egress, "cam265", profile)
    ours, theirs = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=viewer_process, args=(url, viewers, window, theirs))
    proc.start()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ours.recv)  # "measuring"
    [bridge] = egress.bridges.bridges()  # one transcode, however many viewers
    transcodes, sessions = egress.bridges.active, len(egress.sessions)
    cpu0, t0, tcpu0, frames0 = time.process_time(), time.monotonic(), bridge.transcoder.cpu_s, bridge.frames
    counts = await loop.run_in_executor(None, ours.recv)
    wall = time.monotonic() - t0
    row = {
        "viewers": viewers,
        "process_cpu": (time.process_time() - cpu0) / wall,
        "transcode_cpu": (bridge.transcoder.cpu_s - tcpu0) / wall,
        "encoded_fps": (bridge.frames - frames0) / wall,
        "viewer_fps_min": min(counts) / window if counts else 0.0,
        "viewer_fps_mean": sum(counts) / len(counts) / window if counts else 0.0,
        "transcodes": transcodes,
        "sessions": sessions,
    }
    proc.join()
    await runner.cleanup()
    await egress.close_all()
    feeder.cancel()
    print(f"{viewers} viewers: process CPU {row['process_cpu']:.1%}, transcode CPU {row['transcode_cpu']:.1%}, "
          f"encoded {row['encoded_fps']:.1f} fps, viewers min {row['viewer_fps_min']:.1f} fps")  # fmt: skip
    return row


def part2(units: list[Unit], viewer_counts: list[int], window: float, profile: str) -> list[dict[str, Any]]:
    return [asyncio.run(one_run(units, n, window, profile)) for n in viewer_counts]


# --- report -------------------------------------------------------------------------------------------------


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return f"{os.cpu_count()} CPUs ({model}), {platform.platform()}, PyAV {av.__version__}, {ffmpeg_version()}"


def ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "ffmpeg ?"


Rows = list[dict[str, Any]]


def write_report(args: argparse.Namespace, clip: Path, rows1: Rows, rows2: Rows) -> Path:
    lines = [
        "# H.265 720p -> H.264 transcoding: ours vs the ffmpeg CLI, and one transcode for many viewers",
        "",
        f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}",
        f"- machine: {machine()}",
        f"- command: `python benchmarks/transcode_bench.py {shlex.join(sys.argv[1:])}`",
        f"- clip: 1280x720 25 fps H.265 (testsrc2 + temporal noise), 2 Mbit/s, GOP 50, {args.seconds} s;"
        f" output H.264 baseline {BIT_RATE // 1000} kbit/s, x264 ultrafast + zerolatency",
        f"- ffmpeg command: `{shlex.join(ffmpeg_cmd(clip.with_name('clip.hevc'), 1))}`",
        "",
        f"## Throughput (frames per CPU-second, best of {args.repeat})",
        "",
        "| threads per codec | ours | ffmpeg CLI | ours / ffmpeg | 25 fps pipelines per core (ours) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows1:
        lines.append(f"| {r['threads']} | {r['ours_fps_per_cpu_s']:.0f} | {r['ffmpeg_fps_per_cpu_s']:.0f} | "
                     f"{r['ratio']:.3f} | {r['ours_fps_per_cpu_s'] / FPS:.2f} |")  # fmt: skip
    lines += [
        "",
        f"## One transcode (profile `{args.profile}`), viewers in another process, {args.window:.0f} s window",
        "",
        "| viewers | transcodes | server CPU | of which transcode | frames encoded /s | viewer fps min / mean |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows2:
        lines.append(f"| {r['viewers']} | {r['transcodes']} | {r['process_cpu']:.1%} | {r['transcode_cpu']:.1%} | "
                     f"{r['encoded_fps']:.1f} | {r['viewer_fps_min']:.1f} / {r['viewer_fps_mean']:.1f} |")  # fmt: skip
    if len(rows2) >= 2:
        first, last = rows2[0], rows2[-1]
        extra = (last["process_cpu"] - first["process_cpu"]) / max(1, last["viewers"] - first["viewers"])
        drift = last["transcode_cpu"] - first["transcode_cpu"]
        lines += ["", f"Transcode CPU {first['viewers']} -> {last['viewers']} viewers: {drift:+.1%} of a core "
                  f"(flat); each further viewer adds {extra:.2%} of a core in the server (aiortc packetising, "
                  "SRTP and sending: the send cost)."]  # fmt: skip
    lines += ["", "Notes: the two sides do not link the same FFmpeg: PyAV 18 bundles libavcodec "
              f"{'.'.join(map(str, av.library_versions['libavcodec']))} and its own libx264, the ffmpeg CLI is "
              "Debian's 5.1 build. Throughput is per CPU-second (process user + system time), so other load on "
              "the machine changes it little; the ratio is of two runs made back to back in this process."]  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"transcode-{dt.datetime.now():%Y-%m-%d-%H%M}.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=12, help="clip length")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--viewers", default="1,20", help="viewer counts for part 2")
    parser.add_argument("--window", type=float, default=8.0, help="seconds measured per viewer count")
    parser.add_argument("--profile", default="main", help="main: H.265 -> H.264 at 720p; low: 640x360")
    parser.add_argument("--skip-part1", action="store_true")
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.hevc", args.seconds)
        units = read_units(clip, "h265")
        rows1 = [] if args.skip_part1 else part1(clip, units, args.repeat)
        rows2 = part2(units, [int(n) for n in args.viewers.split(",")], args.window, args.profile)
        print(f"wrote {write_report(args, clip, rows1, rows2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
