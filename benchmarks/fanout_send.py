"""The send path alone: one camera frame to N viewers, core_ext.fanout against aiortc's per-packet path.

    .venv/bin/python benchmarks/fanout_send.py                # 200 and 1000 viewers, both SRTP profiles
    .venv/bin/python benchmarks/fanout_send.py --viewers 500 --seconds 5

Each viewer is a real SRTP session (pylibsrtp, the library aiortc uses) and a UDP socket sending to its own
loopback receiver (small receive buffers, never read: the kernel's full receive path runs, then drops).
- `fanout`: `send_all` — the frame packetised once, per viewer header + srtp_protect + one sendmmsg, the
  equal-size packets of a frame as one UDP GSO datagram the kernel splits (the default);
- `fanout, no GSO`: the same with one datagram per packet in the sendmmsg;
- `aiortc`: what `RTCRtpSender._run_rtp` does per viewer and packet, minus its asyncio scheduling: the
  H.264 payloads from aiortc's own packetiser once per viewer, then `RtpPacket` + header extensions +
  `serialize` + `Session.protect` + `sendto`.
The frame is 5,000 bytes (a P-frame of a 1 Mbit/s 25 fps camera, 5 packets). Reports CPU microseconds per packet
and the viewers one core could feed at 25 fps. This is the egress hot path only: ICE, DTLS, RTCP and the
viewer farm are measured by viewer_farm.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import socket
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpSendParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from core_ext.fanout import RtpOutput, packetize_h264, send_all, set_gso  # noqa: E402

PROTECT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))
PROFILES = {
    "aes128-gcm": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "aes128-cm-sha1-80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
}
FRAME = b"\x00\x00\x00\x01\x41" + os.urandom(4995)
FPS = 25


class Viewers:
    def __init__(self, n: int, profile: str) -> None:
        kind, key_len = PROFILES[profile]
        self.receivers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
        self.senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
        for r in self.receivers:
            r.bind(("127.0.0.1", 0))
            r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.addrs = [r.getsockname() for r in self.receivers]
        self.sessions = [Session(Policy(key=bytes(key_len), ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=kind))
                         for _ in range(n)]  # fmt: skip

    def close(self) -> None:
        for s in self.receivers + self.senders:
            s.close()


def fanout(v: Viewers) -> Callable[[], int]:
    outputs = []
    for sock, addr, srtp in zip(v.senders, v.addrs, v.sessions, strict=True):
        out = RtpOutput(1234, 102, abs_send_time_id=2, mid_id=1, mid=b"0", keepalive=srtp,
                        srtp_ctx=int(ffi.cast("uintptr_t", srtp._srtp[0])), protect=PROTECT)  # fmt: skip
        out.set_target(sock.fileno(), addr[0], addr[1])
        outputs.append(out)
    pts = 0

    def step() -> int:
        nonlocal pts
        pts += 3600
        frame = packetize_h264(FRAME, pts)
        send_all(outputs, frame)
        return frame.count * len(outputs)

    return step


def aiortc_path(v: Viewers) -> Callable[[], int]:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpSendParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(id=2, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    ]))  # fmt: skip
    encoders = [H264Encoder() for _ in v.senders]
    seqs = [0] * len(v.senders)
    pts = 0

    def step() -> int:
        nonlocal pts
        pts += 3600
        sent = 0
        for i, (sock, addr, srtp, enc) in enumerate(zip(v.senders, v.addrs, v.sessions, encoders, strict=True)):
            packet = av.Packet(FRAME)
            packet.pts, packet.time_base = pts, Fraction(1, 90000)
            payloads, timestamp = enc.pack(packet)  # aiortc packetises per viewer
            for j, payload in enumerate(payloads):
                rtp = RtpPacket(payload_type=102, sequence_number=seqs[i], timestamp=timestamp)
                rtp.ssrc, rtp.payload, rtp.marker = 5678, payload, int(j == len(payloads) - 1)
                rtp.extensions.abs_send_time = (int(time.time() * (1 << 18))) & 0xFFFFFF
                rtp.extensions.mid = "0"
                sock.sendto(srtp.protect(rtp.serialize(ext_map)), addr)
                seqs[i] = (seqs[i] + 1) & 0xFFFF
                sent += 1
        return sent

    return step


def measure(step: Callable[[], int], seconds: float) -> tuple[float, int]:
    """CPU microseconds per packet over `seconds` of back-to-back frames; and the packets sent."""
    cpu0, wall0, packets = time.process_time(), time.monotonic(), 0
    while time.monotonic() - wall0 < seconds:
        packets += step()
    return 1e6 * (time.process_time() - cpu0) / packets, packets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", default="200,1000")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    packets_per_frame = packetize_h264(FRAME, 0).count
    rows = []
    load = os.getloadavg()[0]
    for n in (int(x) for x in args.viewers.split(",")):
        for profile in PROFILES:
            v = Viewers(n, profile)
            try:
                set_gso(False)
                plain, _ = measure(fanout(v), args.seconds)
                set_gso(True)
                ours, _ = measure(fanout(v), args.seconds)
                theirs, _ = measure(aiortc_path(v), args.seconds)
            finally:
                v.close()
            per_core = [round(1e6 / (us * packets_per_frame * FPS)) for us in (ours, plain, theirs)]
            rows.append((n, profile, ours, plain, theirs, theirs / ours, *per_core))
            print(rows[-1], flush=True)
    write(args, rows, load, packets_per_frame)


def write(args: argparse.Namespace, rows: list[tuple[Any, ...]], load: float, ppf: int) -> None:
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    lines = [
        "# Fan-out send path: core_ext.fanout vs aiortc's per-packet path (same run)", "",
        f"- date: {stamp}",
        f"- machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {platform.platform()}, "
        f"load average at start {load:.2f}",
        f"- command: `python benchmarks/fanout_send.py {shlex.join(sys.argv[1:])}`",
        f"- one 5,000-byte H.264 P-frame ({ppf} RTP packets) per step to every viewer; each viewer a real libsrtp "
        "session and UDP socket to its own loopback receiver", "",
        "| viewers | SRTP profile | us/packet: fanout | fanout, no GSO | aiortc path | aiortc / fanout "
        "| viewers/core at 1 Mbit/s: fanout | fanout, no GSO | aiortc path |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for n, profile, ours, plain, theirs, ratio, pc_ours, pc_plain, pc_theirs in rows:
        lines.append(f"| {n} | {profile} | {ours:.2f} | {plain:.2f} | {theirs:.2f} | {ratio:.1f}x | {pc_ours} "
                     f"| {pc_plain} | {pc_theirs} |")  # fmt: skip
    lines += [
        "",
        "CPU is this process's user + system time, so the kernel's send (and loopback receive) path is included.",
        "Viewers/core = 1 s / (us per packet x packets per frame x 25 fps): the send path alone; per-viewer RTCP,",
        "ICE consent and DTLS add to it (see the viewer-farm results for whole sessions).",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fanout-send-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print(path)


if __name__ == "__main__":
    main()
