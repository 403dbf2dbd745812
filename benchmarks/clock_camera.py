#!/usr/bin/python3
"""Clock camera: a live RTSP camera whose every frame carries the wall-clock time it was made.

Run with Debian's /usr/bin/python3 (PyGObject + gst-rtsp-server; no numpy needed):

    /usr/bin/python3 benchmarks/clock_camera.py --port 0 [--mount clock] [--gop 100] [--fps 25]

Frames are gray 640x360 I420 with the stamp band of benchmarks/stamp.py on top (time.time() in ms,
taken when the frame is made, at its due time). They go appsrc -> x264enc (zerolatency, ultrafast,
no B-frames, `--gop` frames between IDRs: 100 = 4 s at 25 fps) -> rtph264pay in a shared
gst-rtsp-server factory. A viewer's "age of first picture" is then Date.now() - stamp on the same
machine. Prints `READY rtsp://HOST:PORT` once listening; the stream is at rtsp://HOST:PORT/MOUNT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import stamp  # noqa: E402

WIDTH, HEIGHT = 640, 360
TICK_MS = 2  # frames are made at most this late against their due time


class FrameSource:
    """Makes and pushes one stamped frame at each frame's due time on the pipeline clock."""

    def __init__(self, appsrc: Gst.Element, fps: int) -> None:
        self.src = appsrc
        self.duration = Gst.SECOND // fps
        self.index = 0
        self.t0: int | None = None
        band = 2 * stamp.cell_size(WIDTH) * WIDTH
        self.rest = bytes([stamp.BACKGROUND]) * (WIDTH * HEIGHT - band)
        self.chroma = bytes([128]) * (WIDTH * HEIGHT // 2)  # U and V: no colour
        self.source_id = GLib.timeout_add(TICK_MS, self.tick)

    def tick(self) -> bool:
        clock = self.src.get_clock()
        now = clock.get_time() - self.src.get_base_time() if clock else 0
        if self.t0 is None:
            self.t0 = now
        if self.t0 + self.index * self.duration <= now:
            # One frame per tick at most: after a stall, frames are skipped rather than bunched,
            # as a camera would; the stamp is always the time the frame is made.
            self.index = max(self.index, (now - self.t0) // self.duration)
            if self.push(self.t0 + self.index * self.duration) != Gst.FlowReturn.OK:
                self.source_id = 0
                return False
        return True

    def push(self, pts: int) -> Gst.FlowReturn:
        now_ms = time.time_ns() // 1_000_000
        buf = Gst.Buffer.new_wrapped(stamp.band_rows(now_ms, WIDTH) + self.rest + self.chroma)
        buf.pts = buf.dts = pts
        buf.duration = self.duration
        self.index += 1
        return self.src.emit("push-buffer", buf)

    def stop(self, *_: object) -> None:
        if self.source_id:
            GLib.source_remove(self.source_id)
            self.source_id = 0


def make_factory(fps: int, gop: int, bitrate: int, aud: bool) -> GstRtspServer.RTSPMediaFactory:
    launch = (
        f"( appsrc name=src is-live=true format=time do-timestamp=false max-bytes=0 "
        f"caps=video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bframes=0 bitrate={bitrate} "
        f"aud={str(aud).lower()} "
        f"! video/x-h264,profile=constrained-baseline "
        f"! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=0 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)

    def configure(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
        source = FrameSource(media.get_element().get_by_name("src"), fps)
        media.connect("unprepared", source.stop)

    factory.connect("media-configure", configure)
    return factory


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554, help="0 picks a free port (see the READY line)")
    p.add_argument("--mount", default="clock")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=100, help="frames between IDRs (default 100: 4 s at 25 fps)")
    p.add_argument("--bitrate", type=int, default=800, help="kbit/s")
    p.add_argument("--aud", action="store_true", help="start every access unit with an AUD (x264's default)")
    args = p.parse_args(argv)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = make_factory(args.fps, args.gop, args.bitrate, args.aud)
    server.get_mount_points().add_factory("/" + args.mount.lstrip("/"), factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on {args.host}:{args.port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://{args.host}:{server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
