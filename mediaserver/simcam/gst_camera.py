#!/usr/bin/python3
"""Simulated RTSP camera: loops H.264/H.265 clips forever through gst-rtsp-server.

Run with Debian's /usr/bin/python3 (it needs PyGObject: gi, Gst, GstRtspServer). This file must not
import the project: it is started as a separate process by `mediaserver demo` and by the tests.

    /usr/bin/python3 gst_camera.py --port 8554 --mount /cam1=clip.mp4 --mount /cam2=hevc.mp4 \
        [--auth basic|digest --user u --password p] [--fps 25] [--aud]

Each clip is demuxed once into access units (ffmpeg, Annex-B). Each mount is a shared factory fed by
an appsrc; a GLib timer pushes units ~100 ms ahead of the pipeline clock with explicit timestamps
(pts = t0 + i * frame_duration), so the stream is a steady live source whose timestamps keep rising
across loops, like a camera. Prints `READY rtsp://HOST:PORT` on stdout once listening (`--port 0`
picks a free port and the line tells which).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

LEAD_NS = 100 * Gst.MSECOND  # how far ahead of the pipeline clock units are queued
TICK_MS = 10

# NAL unit types of the access unit delimiter, which ffmpeg inserts so AUs split exactly.
H264_AUD = 9
H265_AUD = 35


@dataclass(frozen=True)
class Clip:
    codec: str  # "h264" or "h265"
    fps: Fraction
    units: list[bytes]  # Annex-B access units, AUD removed


def probe(path: str) -> tuple[str, Fraction]:
    """Codec and frame rate of the clip's first video stream."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,r_frame_rate",
            "-of",
            "json",
            path,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    stream = json.loads(out)["streams"][0]
    codec = {"h264": "h264", "hevc": "h265"}[stream["codec_name"]]
    return codec, Fraction(stream["r_frame_rate"])


def split_nals(stream: bytes) -> list[bytes]:
    """Annex-B byte stream -> NAL units (without start codes)."""
    nals = []
    starts = []
    i = stream.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = stream.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(stream)
        nal = stream[start:end].rstrip(b"\x00") if n + 1 < len(starts) else stream[start:end]
        if nal:
            nals.append(nal)
    return nals


def nal_type(codec: str, nal: bytes) -> int:
    return (nal[0] & 0x1F) if codec == "h264" else (nal[0] >> 1) & 0x3F


def demux(path: str, fps: float | None, keep_aud: bool = False) -> Clip:
    """Read the clip once into Annex-B access units, split at the AUDs ffmpeg inserts."""
    codec, rate = probe(path)
    bsf = (
        "h264_mp4toannexb,h264_metadata=aud=insert" if codec == "h264" else "hevc_mp4toannexb,hevc_metadata=aud=insert"
    )
    fmt = "h264" if codec == "h264" else "hevc"
    stream = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, "-map", "0:v:0", "-c", "copy", "-bsf:v", bsf, "-f", fmt, "-"],
        check=True,
        capture_output=True,
    ).stdout
    aud = H264_AUD if codec == "h264" else H265_AUD
    units: list[bytes] = []
    current: list[bytes] = []
    for nal in split_nals(stream):
        if nal_type(codec, nal) == aud:
            if current:
                units.append(b"".join(b"\x00\x00\x00\x01" + n for n in current))
            current = [nal] if keep_aud else []
        else:
            current.append(nal)
    if current:
        units.append(b"".join(b"\x00\x00\x00\x01" + n for n in current))
    if not units:
        raise SystemExit(f"{path}: no video access units")
    return Clip(codec, Fraction(fps).limit_denominator(1001) if fps else rate, units)


class Feeder:
    """Pushes a clip's units into one media's appsrc, paced by the pipeline clock."""

    def __init__(self, clip: Clip, appsrc: Gst.Element) -> None:
        self.clip = clip
        self.src = appsrc
        self.index = 0
        self.t0: int | None = None
        self.duration = int(Gst.SECOND / clip.fps)
        self.source_id = GLib.timeout_add(TICK_MS, self.tick)

    def running_time(self) -> int | None:
        clock = self.src.get_clock()
        if clock is None:
            return None
        return clock.get_time() - self.src.get_base_time()

    def tick(self) -> bool:
        now = self.running_time()
        if now is None:  # not PLAYING yet: prime one unit so the pipeline can preroll caps
            if self.index == 0:
                self.push(0)
            return True
        if self.t0 is None:
            self.t0 = now - self.index * self.duration
        while self.t0 + self.index * self.duration <= now + LEAD_NS:
            if self.push(self.t0 + self.index * self.duration) != Gst.FlowReturn.OK:
                self.source_id = 0
                return False
        return True

    def push(self, pts: int) -> Gst.FlowReturn:
        data = self.clip.units[self.index % len(self.clip.units)]
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = pts
        buf.dts = pts
        buf.duration = self.duration
        self.index += 1
        return self.src.emit("push-buffer", buf)

    def stop(self, *_: object) -> None:
        if self.source_id:
            GLib.source_remove(self.source_id)
            self.source_id = 0


# A G.711 (PCMU) track beside the video, as cameras with a microphone offer it (silence: tests only need the track).
# Paced by `identity sync=true`: with a second live source gst-rtsp-server's PLAY fails ("seek failed").
AUDIO = (
    "audiotestsrc wave=silence samplesperbuffer=160 ! identity sync=true "
    "! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0"
)


def make_factory(clip: Clip, auth: bool, audio: bool = False) -> GstRtspServer.RTSPMediaFactory:
    enc = "h264" if clip.codec == "h264" else "h265"
    rate = f"{clip.fps.numerator}/{clip.fps.denominator}"
    launch = (
        f"( appsrc name=src is-live=true format=time do-timestamp=false max-bytes=0 "
        f"caps=video/x-{enc},stream-format=byte-stream,alignment=au,framerate={rate} "
        f"! {enc}parse config-interval=-1 ! rtp{enc}pay name=pay0 pt=96 config-interval=0 {AUDIO if audio else ''} )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    factory.connect("media-configure", on_media_configure, clip)
    if auth:
        factory.add_role_from_structure(
            Gst.Structure.new_from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )
        )
    return factory


def on_media_configure(_factory: object, media: GstRtspServer.RTSPMedia, clip: Clip) -> None:
    appsrc = media.get_element().get_by_name("src")
    feeder = Feeder(clip, appsrc)
    media.connect("unprepared", feeder.stop)


def make_auth(method: str, user: str, password: str) -> GstRtspServer.RTSPAuth:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "user")
    if method == "basic":
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    else:
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        auth.add_digest(user, password, token)
    return auth


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554, help="0 picks a free port (see the READY line)")
    p.add_argument(
        "--mount",
        action="append",
        required=True,
        metavar="PATH=CLIP",
        help="serve CLIP (MP4 or elementary H.264/H.265) at rtsp://HOST:PORT/PATH; repeatable",
    )
    p.add_argument("--auth", choices=["none", "basic", "digest"], default="none")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="admin")
    p.add_argument("--fps", type=float, help="override the clips' frame rate")
    p.add_argument("--aud", action="store_true", help="start every access unit with an AUD, as many cameras do")
    p.add_argument("--audio", action="store_true", help="add a G.711 PCMU audio track (silence)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    use_auth = args.auth != "none"
    if use_auth:
        server.set_auth(make_auth(args.auth, args.user, args.password))
    clips: dict[str, Clip] = {}
    mounts = server.get_mount_points()
    for spec in args.mount:
        path, sep, clip_path = spec.partition("=")
        if not sep or not path or not clip_path:
            raise SystemExit(f"--mount {spec!r}: expected PATH=CLIP")
        if clip_path not in clips:
            clips[clip_path] = demux(clip_path, args.fps, args.aud)
        mounts.add_factory("/" + path.lstrip("/"), make_factory(clips[clip_path], use_auth, args.audio))
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
