"""Helpers that start and query real peers (gst-rtsp-server camera, ffprobe, ffmpeg) for the tests.

Everything binds 127.0.0.1 and lets the OS pick ports (the simulated camera runs with `--port 0` and
reports its port on its READY line), so parallel runs never clash. Every child process gets
PR_SET_PDEATHSIG, so it dies with the test process even when pytest is killed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import itertools
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from mediaserver.simcam import GST_CAMERA, SYSTEM_PYTHON

Auth = Literal["none", "basic", "digest"]
Transport = Literal["tcp", "udp"]
# auth_camera fixture: (method, user, password) -> rtsp URL without credentials
AuthCamera = Callable[[Auth, str, str], str]

APT_HINT = (
    "apt-get install -y ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp "
    "gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0"
)


def missing_peers() -> list[str]:
    """Names of the external programs these helpers need that are not installed."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    probe = [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"]
    if not Path(SYSTEM_PYTHON).exists() or subprocess.run(probe, capture_output=True).returncode:
        missing.append(f"{SYSTEM_PYTHON} with gi + GstRtspServer")
    return missing


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer port 0 where the peer supports it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the child when the test process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def with_credentials(url: str, user: str, password: str) -> str:
    """rtsp://host:port/path -> rtsp://user:password@host:port/path (percent-encoded)."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


# --- simulated camera ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimCam:
    """A running gst_camera.py process."""

    base_url: str  # rtsp://127.0.0.1:PORT

    def url(self, mount: str) -> str:
        return f"{self.base_url}/{mount.lstrip('/')}"


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """Read the READY line from the camera's stdout; raise with its stderr if it never comes."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(left):
                line = proc.stdout.readline().decode(errors="replace").strip()
                if line.startswith("READY "):
                    return line.split(" ", 1)[1]
                if not line and proc.poll() is not None:
                    break
    stop_process(proc)
    raise RuntimeError(f"peer not ready after {timeout}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def ready_process(args: list[str], timeout: float = 30.0) -> Iterator[str]:
    """Run a peer that prints `READY <url>` once it serves; yields the URL, stops the peer on exit."""
    with tempfile.NamedTemporaryFile(prefix="peer-", suffix=".log", delete=False) as log_file:
        log = Path(log_file.name)
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file, preexec_fn=_die_with_parent
        )
    try:
        yield _wait_ready(proc, log, timeout)
    finally:
        stop_process(proc)
        if proc.stdout:
            proc.stdout.close()
        log.unlink(missing_ok=True)


@contextlib.contextmanager
def simcam(
    mounts: Mapping[str, str | os.PathLike[str]],
    *,
    auth: Auth = "none",
    user: str = "admin",
    password: str = "admin",
    fps: float | None = None,
    aud: bool = False,
    audio: bool = False,
    timeout: float = 30.0,
) -> Iterator[SimCam]:
    """Run gst_camera.py serving `mounts` ({"cam": clip_path}) on a free 127.0.0.1 port.

    aud=True starts every access unit with an access unit delimiter, as many real cameras do; audio=True adds a
    G.711 PCMU track."""
    args = [SYSTEM_PYTHON, str(GST_CAMERA), "--host", "127.0.0.1", "--port", "0", "--auth", auth]
    args += ["--user", user, "--password", password]
    for mount, clip in mounts.items():
        args += ["--mount", f"{mount}={os.fspath(clip)}"]
    if fps is not None:
        args += ["--fps", str(fps)]
    if aud:
        args.append("--aud")
    if audio:
        args.append("--audio")
    with ready_process(args, timeout) as base_url:
        yield SimCam(base_url)


# --- ffprobe / ffmpeg as RTSP clients --------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    codec: str  # ffmpeg's name: "h264", "hevc"
    profile: str
    width: int
    height: int
    fps: float


def ffprobe(url: str, transport: Transport = "tcp", timeout: float = 20.0) -> Probe:
    """Codec, profile, size and frame rate of the first video stream at an RTSP URL."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", transport, "-timeout", "10000000",
         "-select_streams", "v:0", "-show_entries", "stream=codec_name,profile,width,height,r_frame_rate",
         "-of", "default=noprint_wrappers=1", url],
        check=True, capture_output=True, text=True, timeout=timeout,
    ).stdout  # fmt: skip
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    num, _, den = fields["r_frame_rate"].partition("/")
    return Probe(
        codec=fields["codec_name"],
        profile=fields.get("profile", ""),
        width=int(fields["width"]),
        height=int(fields["height"]),
        fps=int(num) / int(den or 1),
    )


def rtsp_status(url: str, transport: Transport = "tcp", timeout: float = 20.0) -> tuple[int, str]:
    """(exit code, stderr) of an ffprobe against `url`; for checks that expect a refusal."""
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", transport, "-timeout", "10000000", url],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return proc.returncode, proc.stderr


@dataclass(frozen=True)
class FrameCount:
    frames: int  # frames read (or decoded, with decode=True)
    drops: int  # ffmpeg's drop_frames
    wall_s: float  # wall-clock time from start to exit, connection set-up included
    stderr: str


def count_frames(
    url: str,
    seconds: float = 4.0,
    transport: Transport = "tcp",
    decode: bool = False,
    timeout: float | None = None,
) -> FrameCount:
    """Read `seconds` of stream time with ffmpeg and report its frame counters."""
    codec = [] if decode else ["-c", "copy"]
    with tempfile.NamedTemporaryFile(prefix="ffprogress-", suffix=".txt") as progress:
        start = time.monotonic()
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", transport, "-timeout", "10000000",
             "-i", url, "-t", str(seconds), *codec, "-f", "null", "-", "-progress", progress.name],
            capture_output=True, text=True, timeout=timeout or seconds + 30,
        )  # fmt: skip
        wall = time.monotonic() - start
        text = Path(progress.name).read_text()
    if proc.returncode:
        raise RuntimeError(f"ffmpeg exited {proc.returncode}: {proc.stderr[-2000:]}")
    return FrameCount(_last_int(text, "frame"), _last_int(text, "drop_frames"), wall, proc.stderr)


def _last_int(progress: str, key: str) -> int:
    values = re.findall(rf"^{key}=(\d+)$", progress, re.MULTILINE)
    return int(values[-1]) if values else 0


# --- RTSP capture and the misbehaving replay server (fault injection) ----------------------------------


@dataclass(frozen=True)
class Capture:
    """RTP packets recorded from a real camera over TCP interleaved, trimmed to whole GOPs."""

    codec: Literal["h264", "h265"]
    sdp: str
    packets: list[bytes]  # RTP packets (channel 0), the first one opens a keyframe's parameter sets

    @property
    def frame_ticks(self) -> int:
        """The usual RTP timestamp step between frames (90 kHz ticks)."""
        stamps = sorted({int.from_bytes(p[4:8], "big") for p in self.packets})
        steps = sorted(b - a for a, b in itertools.pairwise(stamps))
        return steps[len(steps) // 2] if steps else 3600


class RtspConn:
    """The few RTSP client steps capture_rtsp() needs; not a general client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.cseq = reader, writer, 0

    async def request(self, method: str, uri: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode(errors="replace")
        status_line, *header_lines = head.strip().split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        return int(status_line.split()[1]), fields, body

    async def read_frame(self) -> tuple[int, bytes]:
        """Next interleaved frame as (channel, payload), skipping any RTSP message in between."""
        while True:
            first = await self.reader.readexactly(1)
            if first == b"$":
                channel, size = struct.unpack("!BH", await self.reader.readexactly(3))
                return channel, await self.reader.readexactly(size)
            head = first + await self.reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await self.reader.readexactly(int(length.group(1)) if length else 0)


def _opens_keyframe(codec: str, payload: bytes) -> bool:
    """True for the packet carrying a keyframe's first parameter set (SPS / VPS), alone or aggregated."""
    if codec == "h264":
        nal = payload[0] & 0x1F
        return nal == 7 or (nal == 24 and len(payload) > 3 and payload[3] & 0x1F == 7)
    nal = (payload[0] >> 1) & 0x3F
    return nal == 32 or (nal == 48 and len(payload) > 4 and (payload[4] >> 1) & 0x3F == 32)


def _trim_to_gops(codec: str, packets: list[bytes]) -> list[bytes]:
    """Cut to [first keyframe, last keyframe): the replay loops over whole GOPs."""
    starts = [i for i, p in enumerate(packets) if _opens_keyframe(codec, rtp_payload(p))]
    if len(starts) < 2:
        raise RuntimeError(f"capture holds {len(starts)} keyframes; capture longer than two GOPs")
    return packets[starts[0] : starts[-1]]


def rtp_payload(packet: bytes) -> bytes:
    """Payload of a well-formed RTP packet (CSRCs, extension and padding removed)."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    return packet[offset:end]


async def capture_rtsp(url: str, seconds: float = 2.5, limit: float = 20.0) -> Capture:
    """Record `seconds` of RTP from `url` (TCP interleaved) and trim it to whole GOPs."""
    async with asyncio.timeout(limit):
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            conn = RtspConn(reader, writer)
            status, fields, body = await conn.request("DESCRIBE", url, Accept="application/sdp")
            if status != 200:
                raise RuntimeError(f"DESCRIBE {url}: {status}")
            sdp = body.decode()
            base = fields.get("content-base", url.rstrip("/") + "/")
            control = re.findall(r"^a=control:(\S+)", sdp.split("\nm=", 1)[1], re.MULTILINE)[0]
            track = control if "://" in control else base + control
            transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
            status, fields, _ = await conn.request("SETUP", track, Transport=transport)
            session = fields["session"].split(";")[0]
            await conn.request("PLAY", base, Session=session, Range="npt=0.000-")
            packets: list[bytes] = []
            end = asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < end:
                channel, data = await conn.read_frame()
                if channel == 0:
                    packets.append(data)
        finally:
            writer.close()
    codec: Literal["h264", "h265"] = "h265" if "H265/90000" in sdp else "h264"
    return Capture(codec, sdp, _trim_to_gops(codec, packets))


@dataclass
class _Conn:
    """Per-connection replay state."""

    channel: int = 0  # interleaved RTP channel the client asked for in SETUP
    seq: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big"))

    def number(self, packet: bytearray) -> bytearray:
        packet[2:4] = (self.seq % 65536).to_bytes(2, "big")
        self.seq += 1
        return packet


def capture_rtsp_blocking(url: str, seconds: float = 2.5) -> Capture:
    """capture_rtsp() on a private event loop thread: callable from sync code, even inside a loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, capture_rtsp(url, seconds)).result()


FaultMode = Literal[
    "replay",
    "bad_status_line",
    "no_sprop",
    "rtp_version_1",
    "rtp_bad_padding",
    "oversized_frame",
    "junk_between_frames",
    "truncated_frame",
    "disconnect",
    "silent_after_play",
    "hang_after_play",
]
FAULT_MODES: tuple[FaultMode, ...] = FaultMode.__args__  # type: ignore[attr-defined]


class BadRtspServer:
    """A pure-asyncio RTSP server (TCP interleaved only) that replays a real Capture with faults.

    The capture loops forever in real time with continuous sequence numbers and rising timestamps;
    every sent RTP packet takes the next sequence number, so an injected or mutated packet is never
    also reported as a sequence gap. The first `good_packets` packets are always sent intact so the
    client has seen a working stream before the fault. Modes:

    replay               a faithful camera (the control case).
    bad_status_line      every response starts `RTSP/1.0 2OO OK` (letters O, not digits).
    no_sprop             the SDP fmtp has no sprop-parameter-sets / sprop-vps/sps/pps; the parameter
                         sets still come in-band before every keyframe, as with many real cameras.
    rtp_version_1        every `every`-th packet gets RTP version 1 (otherwise untouched).
    rtp_bad_padding      every `every`-th packet is replaced by a 12-byte header with the P bit, 4
                         payload bytes and a padding count of 255 (larger than the packet).
    oversized_frame      every `every`-th packet, an extra 65535-byte interleaved frame on the RTP
                         channel: valid RTP v2 header, then a NAL of an unspecified type (H.264 31,
                         H.265 63) filled with 0xFF; a client must skip it and keep the stream.
    junk_between_frames  every `every`-th packet is preceded by bytes that are neither `$` nor an RTSP
                         message (`\\x00\\xffjunk`); a client must resync on the next `$`.
    truncated_frame      after good_packets: a frame header announcing N bytes, N/2 bytes, then close.
    disconnect           after exactly good_packets packets: close the TCP connection (camera reboot).
    silent_after_play    PLAY answered 200 and no media at all; later requests are still answered.
    hang_after_play      PLAY answered 200, then nothing: no media and no answers to requests.

    A SETUP asking for UDP is answered 461 Unsupported Transport. `requests` records each request
    line received, `connections` counts accepted connections (for reconnect tests). `session_timeout`
    is the timeout announced in the Session header (keep-alive tests).
    """

    def __init__(
        self,
        capture: Capture,
        mode: FaultMode = "replay",
        *,
        good_packets: int = 50,
        every: int = 10,
        session_timeout: int = 60,
    ) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        self.capture, self.mode, self.good_packets, self.every = capture, mode, good_packets, every
        self.session_timeout = session_timeout
        self.requests: list[str] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> BadRtspServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        return self.url

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server:
            await self._server.wait_closed()

    def sdp(self) -> str:
        if self.mode != "no_sprop":
            return self.capture.sdp
        return re.sub(r"sprop-[\w-]+=[^;\r\n]*;?", "", self.capture.sdp).replace(";\r\n", "\r\n")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        stream: asyncio.Task[None] | None = None
        conn = _Conn()
        try:
            while message := await self._read_request(reader):
                method, headers = message
                if self.mode == "hang_after_play" and stream is not None:
                    continue
                reply = self._answer(method, headers, conn)
                writer.write(reply.encode())
                await writer.drain()
                if method == "PLAY" and stream is None:
                    stream = asyncio.create_task(self._stream(writer, conn))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if stream:
                stream.cancel()
                await asyncio.gather(stream, return_exceptions=True)
            writer.close()
            self._tasks.discard(task)

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
        """Next RTSP request as (method, lower-cased headers); skips interleaved RTCP from the client."""
        while True:
            first = await reader.read(1)
            if not first:
                return None
            if first == b"$":
                _, size = struct.unpack("!BH", await reader.readexactly(3))
                await reader.readexactly(size)
                continue
            head = (first + await reader.readuntil(b"\r\n\r\n")).decode(errors="replace")
            request_line, *lines = head.strip().split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(request_line)
            return request_line.split()[0], headers

    def _answer(self, method: str, headers: dict[str, str], conn: _Conn) -> str:
        status = "2OO OK" if self.mode == "bad_status_line" else "200 OK"
        extra: list[str] = []
        body = ""
        if method == "OPTIONS":
            extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            body = self.sdp()
            extra += [f"Content-Base: {self.url}/", "Content-Type: application/sdp"]
        elif method == "SETUP":
            transport = headers.get("transport", "")
            channels = re.search(r"interleaved=(\d+)(?:-(\d+))?", transport)
            if "TCP" not in transport.upper() or not channels:
                status = "461 Unsupported Transport"
            else:
                rtp = conn.channel = int(channels.group(1))
                extra.append(f"Transport: RTP/AVP/TCP;unicast;interleaved={rtp}-{rtp + 1}")
        elif method not in ("PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"):
            status = "405 Method Not Allowed"
        if method != "OPTIONS":
            extra.append(f"Session: 12345678;timeout={self.session_timeout}")
        lines = [f"RTSP/1.0 {status}", f"CSeq: {headers.get('cseq', '0')}", *extra]
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    async def _stream(self, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        if self.mode in ("silent_after_play", "hang_after_play"):
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, (packet, ticks) in enumerate(self._timeline()):
            if (delay := start + ticks / 90000 - loop.time()) > 0:
                await asyncio.sleep(delay)
            ends = n == self.good_packets and self.mode in ("truncated_frame", "disconnect")
            if not (ends and self.mode == "disconnect"):
                writer.writelines(self._frames(n, packet, conn))
            await writer.drain()
            if ends:
                writer.close()
                return

    def _timeline(self) -> Iterator[tuple[bytearray, int]]:
        """Captured packets forever as (packet with fresh seq/timestamp, ticks since the start)."""
        packets = self.capture.packets
        first = int.from_bytes(packets[0][4:8], "big")
        span = (int.from_bytes(packets[-1][4:8], "big") - first) % 2**32 + self.capture.frame_ticks
        for loop_index in itertools.count():
            for packet in packets:
                ticks = (int.from_bytes(packet[4:8], "big") - first) % 2**32 + loop_index * span
                out = bytearray(packet)
                out[4:8] = ((first + ticks) % 2**32).to_bytes(4, "big")
                yield out, ticks

    def _frames(self, n: int, packet: bytearray, conn: _Conn) -> Iterator[bytes]:
        """Interleaved frames to send for the n-th packet, faults applied; numbers each RTP packet."""
        faulty = n >= self.good_packets and (n - self.good_packets) % self.every == 0
        mode = self.mode if faulty or n == self.good_packets else "replay"
        if mode == "junk_between_frames":
            yield b"\x00\xffjunk"
        if mode == "oversized_frame":
            yield self._interleave(conn.channel, conn.number(self._oversized(packet)))
        if mode == "rtp_version_1":
            packet[0] = (packet[0] & 0x3F) | 0x40
        if mode == "rtp_bad_padding":
            packet = bytearray(packet[:12]) + b"\x00\x00\x00\x00\xff"
            packet[0] |= 0x20
        if mode == "truncated_frame":
            frame = self._interleave(conn.channel, conn.number(packet))
            yield frame[: 4 + len(packet) // 2]
            return
        yield self._interleave(conn.channel, conn.number(packet))

    def _oversized(self, template: bytearray) -> bytearray:
        header = bytearray(template[:12])
        header[0] &= 0xC0  # no padding, extension or CSRCs
        header[1] &= 0x7F  # no marker
        nal = b"\x1f" if self.capture.codec == "h264" else b"\x7e\x01"  # NAL types 31 / 63: unspecified
        return header + nal + b"\xff" * (65535 - 12 - len(nal))

    @staticmethod
    def _interleave(channel: int, packet: bytes | bytearray) -> bytes:
        return struct.pack("!cBH", b"$", channel, len(packet)) + bytes(packet)


@contextlib.contextmanager
def bad_rtsp_in_thread(capture: Capture, mode: FaultMode = "replay", **options: int) -> Iterator[str]:
    """Run a BadRtspServer on its own event loop thread, for sync tests driving ffmpeg; yields its URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = BadRtspServer(capture, mode, **options)
    try:
        yield asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# --- a hostile camera's handshake: answers OPTIONS/DESCRIBE/SETUP/PLAY properly, then the caller streams what it likes
HOSTILE_SDP = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hostile\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;"
    "sprop-parameter-sets=Z0LAHtkAoEf+yA==,aMuDyyA=\r\na=control:track1\r\n"
)


def rtsp_answer(request: str, url: str) -> bytes:
    """A well-formed 200 to one RTSP request (TCP interleaved channels 0-1), for cameras that misbehave later."""
    method = request.split(" ", 1)[0]
    cseq = next((ln.split(":", 1)[1].strip() for ln in request.split("\r\n") if ln.lower().startswith("cseq")), "0")
    extra, body = [], ""
    if method == "OPTIONS":
        extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
    elif method == "DESCRIBE":
        body = HOSTILE_SDP
        extra += [f"Content-Base: {url}/", "Content-Type: application/sdp"]
    elif method == "SETUP":
        extra.append("Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
    if method != "OPTIONS":
        extra.append("Session: 4242;timeout=60")
    lines = ["RTSP/1.0 200 OK", f"CSeq: {cseq}", *extra, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
