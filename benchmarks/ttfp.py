"""Time to first picture (TTFP) and age of that picture, measured in headless Chromium over WHEP.

    .venv/bin/python benchmarks/ttfp.py --start-server            # clock camera + serve, all three policies
    .venv/bin/python benchmarks/ttfp.py --whep-url http://127.0.0.1:8080 --camera clock --token T --mode mine

With --start-server one clock camera (4 s GOP) is started and `mediaserver serve` is run once per
first-picture policy (`--modes`, default keyframe,gop,live: wait for the camera's next keyframe, replay
the cached GOP, open on a fresh IDR of the newest frame), so all three are compared in one run on the
same camera and machine.

Each join opens a fresh page at a random moment (uniform over `--spread` seconds, so joins land
anywhere in the camera's GOP), creates an RTCPeerConnection, POSTs the offer to
`{whep-url}/whep/{camera}`, and waits for the first requestVideoFrameCallback. Reported per join:
    ttfp_ms  RTCPeerConnection created -> first frame presented
    age_ms   Date.now() at that moment - the wall-clock stamp in the frame (benchmarks/clock_camera.py);
             same machine, same clock, so this is how old the first picture shown is
The page is served (Playwright route) on the WHEP server's own origin, so no CORS setup is needed.
Prints p50/p95 and writes benchmarks/results/ttfp-<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import BrowserContext

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.browser import CHROMIUM, chromium  # noqa: E402  (Debian Chromium with the flags docs/PEERS.md gives)

from mediaserver.simcam import SYSTEM_PYTHON  # noqa: E402

PAGE_PATH = "/__goldentime_ttfp__.html"
LAT, LON = 37.5663, 126.9779  # where the clock camera "stands" (Seoul City Hall)
MODES = ("keyframe", "gop", "live")

# The join, run in the page. Resolves to {ttfp_ms, signaling_ms, age_ms, stamp, width, height}.
JOIN_JS = """
async ({whepUrl, token, timeoutMs}) => {
  const t0 = performance.now();
  const pc = new RTCPeerConnection();
  window.__pc = pc;
  window.__token = token;
  pc.addTransceiver("video", {direction: "recvonly"});
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); video.play().catch(() => {}); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {  // non-trickle WHEP: send the offer with its candidates
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
    setTimeout(done, 2000);
  });
  const headers = {"Content-Type": "application/sdp"};
  if (token) headers.Authorization = "Bearer " + token;
  const tPost = performance.now();
  const resp = await fetch(whepUrl, {method: "POST", headers, body: pc.localDescription.sdp});
  if (resp.status !== 201) throw new Error("WHEP POST " + resp.status + ": " + await resp.text());
  window.__location = new URL(resp.headers.get("Location"), whepUrl).href;
  await pc.setRemoteDescription({type: "answer", sdp: await resp.text()});
  const signalingMs = performance.now() - tPost;
  const first = await new Promise((done, fail) => {
    setTimeout(() => fail(new Error("no frame within " + timeoutMs + " ms")), timeoutMs);
    video.requestVideoFrameCallback(() => {
      const ttfp = performance.now() - t0, wall = Date.now();
      const canvas = document.createElement("canvas");
      canvas.width = video.videoWidth; canvas.height = video.videoHeight;
      const ctx = canvas.getContext("2d", {willReadFrequently: true});
      ctx.drawImage(video, 0, 0);
      const stamp = decodeImageData(ctx.getImageData(0, 0, canvas.width, canvas.height));
      done({ttfp, wall, stamp, width: canvas.width, height: canvas.height});
    });
  });
  return {ttfp_ms: first.ttfp, signaling_ms: signalingMs, stamp: first.stamp, width: first.width,
          height: first.height, age_ms: first.stamp === null ? null : stampAgeMs(first.stamp, first.wall)};
}
"""

LEAVE_JS = """
async () => {
  if (window.__pc) window.__pc.close();
  const headers = window.__token ? {Authorization: "Bearer " + window.__token} : {};
  if (window.__location) await fetch(window.__location, {method: "DELETE", headers}).catch(() => {});
}
"""


@dataclass
class Join:
    ttfp_ms: float | None = None
    age_ms: float | None = None
    signaling_ms: float | None = None
    error: str = ""


def page_html() -> str:
    return f"<!doctype html><html><body><script>{(HERE / 'lib' / 'stamp.js').read_text()}</script></body></html>"


async def join_once(context: BrowserContext, base: str, camera: str, token: str, timeout_s: float) -> Join:
    page = await context.new_page()
    html = page_html()
    await page.route(base + PAGE_PATH, lambda route: route.fulfill(body=html, content_type="text/html"))
    try:
        await page.goto(base + PAGE_PATH)
        args = {"whepUrl": f"{base}/whep/{camera}", "token": token, "timeoutMs": int(timeout_s * 1000)}
        result = await page.evaluate(JOIN_JS, args)
        await page.evaluate(LEAVE_JS)
        return Join(result["ttfp_ms"], result["age_ms"], result["signaling_ms"])
    except Exception as e:  # a failed join is a result, not a crash of the benchmark
        return Join(error=str(e).splitlines()[0][:200])
    finally:
        await page.close()


async def run_joins(args: argparse.Namespace, base: str, token: str) -> list[Join]:
    joins: list[Join] = []
    async with chromium() as context:
        await join_once(context, base, args.camera, token, args.timeout)  # warm-up, not counted
        for i in range(args.joins):
            await asyncio.sleep(random.uniform(0, args.spread))
            join = await join_once(context, base, args.camera, token, args.timeout)
            joins.append(join)
            print(
                f"join {i + 1:2}/{args.joins}: " + (join.error or f"ttfp {join.ttfp_ms:.0f} ms, age {join.age_ms} ms")
            )
    return joins


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-interpolated percentile (statistics.quantiles, inclusive)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summary(joins: list[Join]) -> dict[str, str]:
    rows: dict[str, str] = {}
    for name in ("ttfp_ms", "age_ms", "signaling_ms"):
        values = [float(v) for j in joins if (v := getattr(j, name)) is not None]
        rows[name] = f"p50 {percentile(values, 50):.0f} / p95 {percentile(values, 95):.0f}" if values else "n/a"
    rows["failed"] = f"{sum(bool(j.error) for j in joins)} of {len(joins)}"
    return rows


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    chromium_version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.platform()}, {chromium_version}"


def write_report(args: argparse.Namespace, runs: dict[str, list[Join]]) -> Path:
    now = dt.datetime.now()
    out = Path(args.results) / f"ttfp-{now:%Y-%m-%d-%H%M}.md"
    rows = {mode: summary(joins) for mode, joins in runs.items()}
    lines = [
        "# Time to first picture and its age",
        "",
        f"- date: {now:%Y-%m-%d %H:%M}",
        f"- machine: {machine()}",
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`",
        f"- camera: {args.camera_desc}",
        f"- joins per policy: {args.joins}, each after a random pause of 0 to {args.spread} s",
        "- ttfp: RTCPeerConnection created -> first frame presented (requestVideoFrameCallback)",
        "- age: wall clock when presented - wall clock stamped into that frame by the camera",
        "",
        "| policy | ttfp ms | age of first picture ms | signaling ms | failed |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {mode} | {r['ttfp_ms']} | {r['age_ms']} | {r['signaling_ms']} | {r['failed']} |"
            for mode, r in rows.items()
        ),
        "",
    ]
    for mode, joins in runs.items():
        lines += [
            f"## {mode}",
            "",
            "| join | ttfp ms | age ms | signaling ms | error |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| {i + 1} | {_fmt(j.ttfp_ms)} | {_fmt(j.age_ms)} | {_fmt(j.signaling_ms)} | {j.error} |"
                for i, j in enumerate(joins)
            ),
            "",
        ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


# --- optional: start the clock camera and the server ----------------------------------------------------


@contextlib.contextmanager
def process(args: list[str], ready: str, timeout: float = 60.0) -> Iterator[str]:
    """Start a process and yield the first stdout line that starts with `ready`."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(ready):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[:3]} not ready")
        else:
            raise RuntimeError(f"{shlex.join(args)} exited {proc.wait()}")
        yield line.strip()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see its log")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def started_camera(args: argparse.Namespace) -> Iterator[str]:
    """The clock camera; yields its RTSP URL."""
    camera = [SYSTEM_PYTHON, str(HERE / "clock_camera.py"), "--port", "0", "--gop", str(args.gop)]
    with process(camera, "READY ") as ready:
        yield ready.split()[1] + "/clock"


@contextlib.contextmanager
def started_server(args: argparse.Namespace, rtsp: str, mode: str) -> Iterator[tuple[str, str]]:
    """`mediaserver serve --first-picture MODE` on a temporary registry holding the clock camera, and a
    stream token for it (obtained as the demo does: a client, an incident around it, a token);
    yields (WHEP base URL, token)."""
    from signaling.access import demo_console_token

    with tempfile.TemporaryDirectory(prefix="ttfp-") as tmp:
        db = str(Path(tmp) / "ttfp.db")
        cli = [sys.executable, "-m", "mediaserver.cli"]
        add = [*cli, "cameras", "add", "--db", db, "--id", args.camera, "--name", "Clock camera"]
        subprocess.run([*add, "--lat", str(LAT), "--lon", str(LON), "--url", rtsp], check=True, cwd=ROOT)
        token = demo_console_token(db, LON, LAT)
        http = f"127.0.0.1:{args.port}"
        serve = [*cli, "serve", "--db", db, "--http", http, "--ice-host", "127.0.0.1", "--first-picture", mode]
        log = Path(tmp) / "server.log"
        with log.open("w") as log_file:
            server = subprocess.Popen([*serve, *args.server_arg], cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://{http}/", server)
            time.sleep(args.settle)  # let ingest connect and see a keyframe
            yield f"http://{http}", token
        finally:
            server.terminate()
            server.wait(10)
            if args.keep_logs:
                Path(args.results).mkdir(parents=True, exist_ok=True)
                (Path(args.results) / f"server-{mode}.log").write_text(log.read_text())


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--whep-url", help="server base URL, e.g. http://127.0.0.1:8080 (WHEP at /whep/{camera})")
    p.add_argument("--camera", default="clock", help="camera id (default %(default)s)")
    p.add_argument("--mode", default="external", help="with --whep-url: label for the report")
    p.add_argument("--modes", default=",".join(MODES), help="with --start-server: first-picture policies to compare")
    p.add_argument("--keep-logs", action="store_true", help="with --start-server: copy server logs to --results")
    p.add_argument("--joins", type=int, default=20)
    p.add_argument("--spread", type=float, default=4.0, help="max random pause before each join, s")
    p.add_argument("--timeout", type=float, default=15.0, help="per join, s")
    p.add_argument("--token", default="", help="Bearer token for WHEP, if the server wants one")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--start-server", action="store_true", help="start the clock camera and mediaserver serve")
    p.add_argument("--port", type=int, default=8089, help="with --start-server: HTTP port")
    p.add_argument("--gop", type=int, default=100, help="with --start-server: clock camera GOP, frames")
    p.add_argument("--settle", type=float, default=5.0, help="with --start-server: wait before joining, s")
    p.add_argument("--server-arg", action="append", default=[], help="with --start-server: extra serve args")
    args = p.parse_args(argv)
    if not args.whep_url and not args.start_server:
        p.error("give --whep-url or --start-server")
    args.camera_desc = (
        f"clock camera 640x360 25 fps, x264 zerolatency, GOP {args.gop} frames, RTSP over TCP (started here)"
        if args.start_server
        else args.camera
    )
    return args


async def run_modes(args: argparse.Namespace) -> dict[str, list[Join]]:
    if not args.start_server:
        return {args.mode: await run_joins(args, args.whep_url.rstrip("/"), args.token)}
    runs: dict[str, list[Join]] = {}
    with started_camera(args) as rtsp:
        for mode in args.modes.split(","):
            print(f"--- first picture policy: {mode}")
            with started_server(args, rtsp, mode) as (base, token):
                runs[mode] = await run_joins(args, base, token)
    return runs


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    runs = asyncio.run(run_modes(args))
    for mode, joins in runs.items():
        print(f"{mode:10} " + "  ".join(f"{name} {value}" for name, value in summary(joins).items()))
    print(f"report: {write_report(args, runs)}")
    return 0 if not any(j.error for joins in runs.values() for j in joins) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
