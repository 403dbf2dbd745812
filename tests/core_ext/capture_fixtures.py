#!/usr/bin/python3
"""Records real RTSP-over-TCP byte streams from gst-rtsp-server as wire fixtures for tests/core_ext.

Run manually (not by pytest) with Debian's /usr/bin/python3, which has PyGObject, from the repo root:

    /usr/bin/python3 tests/core_ext/capture_fixtures.py [--seconds 2]

For each fixture it starts a camera process, does OPTIONS / DESCRIBE / SETUP
(`RTP/AVP/TCP;unicast;interleaved=0-1`) / PLAY over a blocking socket, sends one GET_PARAMETER
half-way (so an RTSP response lands between `$` frames), records every byte after PLAY was sent for
`--seconds`, cuts the recording at the last complete frame/message and writes
`fixtures/<name>.bin`, plus the SDP facts the tests need into `fixtures/fixtures.json`.

Fixtures:
  h264_multislice  mediaserver/simcam/gst_camera.py, x264 clip with 4 slices per picture;
                   rtph264pay config-interval=-1 (SPS/PPS in-band before every IDR)
  h264_sprop_only  this script's own server: videotestsrc ! x264enc (avc) ! rtph264pay
                   config-interval=0, so the parameter sets exist only in the SDP (sprop-parameter-sets)
                   and the depacketiser must insert them
  h265             mediaserver/simcam/gst_camera.py, x265 clip; rtph265pay config-interval=-1
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURES = HERE / "fixtures"
GST_CAMERA = ROOT / "mediaserver" / "simcam" / "gst_camera.py"
MAX_BYTES = 300 * 1024
WIDTH, HEIGHT, GOP = 320, 240, 25

SPROP_ONLY_LAUNCH = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 "
    "! x264enc speed-preset=veryfast key-int-max=25 bframes=0 bitrate=300 option-string=scenecut=0:repeat-headers=0 "
    "! video/x-h264,stream-format=avc,alignment=au ! rtph264pay name=pay0 pt=96 config-interval=0 )"
)


def serve_launch(launch: str) -> None:
    """Minimal gst-rtsp-server on a free port serving `launch` at /cam; prints READY like gst_camera.py."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


def make_clip(path: Path, codec: str, slices: int) -> Path:
    """A 4 s 320x240 testsrc clip, 1 s GOP, no B-frames (flags as in docs/PEERS.md)."""
    src = ["-f", "lavfi", "-i", f"testsrc=size={WIDTH}x{HEIGHT}:rate=25", "-t", "4"]
    if codec == "h264":
        enc = ["-c:v", "libx264", "-profile:v", "baseline", "-g", str(GOP), "-keyint_min", str(GOP)]
        enc += ["-sc_threshold", "0", "-bf", "0", "-x264-params", f"slices={slices}:sliced-threads=0"]
    else:
        params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:log-level=error"
        enc = ["-c:v", "libx265", "-x265-params", params, "-tag:v", "hvc1"]
    args = ["ffmpeg", "-v", "error", "-nostdin", "-y", *src, *enc, "-pix_fmt", "yuv420p", "-b:v", "300k"]
    subprocess.run([*args, "-an", str(path)], check=True)
    return path


def start_camera(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"camera did not start: {line!r}")
    return proc, line.split()[1]


class Rtsp:
    """Just enough of an RTSP client to get one TCP-interleaved stream going."""

    def __init__(self, url: str) -> None:
        host, port = re.match(r"rtsp://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.cseq = 0
        self.session = ""

    def send(self, method: str, url: str, headers: dict[str, str] | None = None) -> None:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: goldentime-capture"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def response(self) -> tuple[dict[str, str], bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        if " 200 " not in lines[0] + " ":
            raise SystemExit(f"RTSP error: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        while len(body) < int(headers.get("content-length", "0")):
            body += self.sock.recv(4096)
        return headers, body

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
        self.send(method, url, headers)
        return self.response()


def capture(url: str, seconds: float) -> tuple[str, bytes]:
    """SDP and the raw bytes received after PLAY was sent."""
    rtsp = Rtsp(url)
    rtsp.request("OPTIONS", url)
    headers, sdp_bytes = rtsp.request("DESCRIBE", url, {"Accept": "application/sdp"})
    sdp = sdp_bytes.decode()
    base = headers.get("content-base", url).rstrip("/")
    control = re.search(r"^a=control:(\S+)", sdp.split("m=video", 1)[1], re.M)
    track = control.group(1) if control else ""
    track_url = track if track.startswith("rtsp://") else f"{base}/{track}"
    headers, _ = rtsp.request("SETUP", track_url, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
    rtsp.session = headers["session"].split(";")[0]
    rtsp.send("PLAY", url, {"Range": "npt=0.000-"})
    stream = bytearray()
    start = time.monotonic()
    pinged = False
    while time.monotonic() - start < seconds:
        if not pinged and time.monotonic() - start > seconds / 2:
            rtsp.send("GET_PARAMETER", url)
            pinged = True
        stream += rtsp.sock.recv(65536)
    rtsp.sock.close()
    return sdp, bytes(stream)


def trim(stream: bytes, limit: int) -> bytes:
    """Cut at the end of the last complete `$` frame or RTSP message within `limit` bytes."""
    pos = 0
    while pos < len(stream):
        if stream[pos] == 0x24:
            if pos + 4 > len(stream):
                break
            end = pos + 4 + int.from_bytes(stream[pos + 2 : pos + 4], "big")
        else:
            head_end = stream.find(b"\r\n\r\n", pos)
            if head_end < 0:
                break
            length = re.search(rb"(?i)content-length:\s*(\d+)", stream[pos:head_end])
            end = head_end + 4 + (int(length.group(1)) if length else 0)
        if end > min(len(stream), limit):
            break
        pos = end
    return stream[:pos]


def sprop(sdp: str, codec: str) -> list[str]:
    """Base64 parameter sets from the fmtp line, in VPS, SPS, PPS order."""
    fmtp = re.search(r"^a=fmtp:\d+ (.*)$", sdp, re.M)
    params = dict(p.strip().partition("=")[::2] for p in fmtp.group(1).split(";")) if fmtp else {}
    keys = ["sprop-parameter-sets"] if codec == "h264" else ["sprop-vps", "sprop-sps", "sprop-pps"]
    return [b64 for key in keys for b64 in params.get(key, "").split(",") if b64]


def record(name: str, camera_args: list[str], path: str, codec: str, slices: int, seconds: float) -> dict:
    proc, base = start_camera(camera_args)
    try:
        sdp, stream = capture(f"{base}/{path}", seconds)
    finally:
        proc.terminate()
        proc.wait()
    data = trim(stream, MAX_BYTES)
    (FIXTURES / f"{name}.bin").write_bytes(data)
    props = sprop(sdp, codec)
    for b64 in props:
        base64.b64decode(b64)  # fail here, not in the tests, on a malformed SDP
    print(f"{name}: {len(data)} bytes, sprop {len(props)} sets", file=sys.stderr)
    return {
        "file": f"{name}.bin",
        "codec": codec,
        "payload_type": int(re.search(r"^m=video \d+ \S+ (\d+)", sdp, re.M).group(1)),  # type: ignore[union-attr]
        "channel": 0,
        "sprop": props,
        "width": WIDTH,
        "height": HEIGHT,
        "gop": GOP,
        "slices": slices,
        "sdp": sdp,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--serve-launch", help=argparse.SUPPRESS)  # internal: run the launch server
    args = parser.parse_args()
    if args.serve_launch:
        serve_launch(args.serve_launch)
        return
    FIXTURES.mkdir(exist_ok=True)
    meta = {}
    with tempfile.TemporaryDirectory() as tmp:
        h264 = make_clip(Path(tmp) / "h264.mp4", "h264", slices=4)
        h265 = make_clip(Path(tmp) / "h265.mp4", "h265", slices=1)
        cam = [sys.executable, str(GST_CAMERA), "--port", "0"]
        meta["h264_multislice"] = record(
            "h264_multislice", [*cam, "--mount", f"/cam={h264}"], "cam", "h264", 4, args.seconds
        )
        meta["h265"] = record("h265", [*cam, "--mount", f"/cam={h265}"], "cam", "h265", 1, args.seconds)
        own = [sys.executable, __file__, "--serve-launch", SPROP_ONLY_LAUNCH]
        meta["h264_sprop_only"] = record("h264_sprop_only", own, "cam", "h264", 1, args.seconds)
    (FIXTURES / "fixtures.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
