"""The camera farm's RTSP side: one asyncio server per process, one `Session` per TCP connection, and one
`Scheduler` that drives every playing session of the process from a single timer tick.

Why one tick: a per-camera task or timer costs a wake-up and a Python frame per camera per frame; here a tick
(every 10 ms by default) sends the frames that are due to one phase group of cameras, so the process wakes 100
times a second whatever N is, and the cameras' phases are spread evenly over the frame period.

Why so little per camera: the floor is one send(2) per camera per frame, and on loopback that syscall also
runs the receiver's TCP input (~5 us in all here). Everything else is kept off the per-camera path:
- RTP sequence numbers and timestamps follow the process's frame clock, and the SSRC is the process's, so
  every session of a phase group that started at the same point of the clip sends byte-identical frames:
  a frame is framed and patched once per tick for all of them (at most one build per clip position) and each
  session only sends it. RTP-Info in the PLAY reply gives each client its first seq and rtptime, as cameras do.
- A playing TCP session sends on its own duplicate of the connection's socket (socket.send: no transport
  buffer bookkeeping, and the descriptor cannot be reused under us); the kernel send buffer is the camera's
  send queue, and what a full buffer did not take is finished before the next frame, or that frame is skipped.
- Faults are decided once per camera (a cached hash), not per frame.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import math
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lib.camfarm_clip import PAYLOAD_TYPE, RTP_FIELDS, Clip

MAX_WRITE_BUFFER = 1 << 20  # a client this far behind loses frames, like a camera's send queue overflowing
SESSION_TIMEOUT = 60
METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
CAM_PATH = re.compile(r"^/cam(\d+)(?:/|$)")
DIGEST_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


@dataclass(frozen=True, slots=True)
class Faults:
    """Which cameras misbehave: fractions of cameras, chosen by a hash of the camera number (reproducible)."""

    drop: float = 0.0
    drop_period: float = 60.0
    drop_down: float = 5.0  # seconds a dropped camera refuses connections before it comes back
    silent: float = 0.0
    garbage: float = 0.0
    refuse_auth: float = 0.0

    def has(self, mode: str, cam: int) -> bool:
        fraction: float = getattr(self, mode)
        return fraction > 0 and _fault_point(mode, cam) < fraction * 2**32

    def is_down(self, cam: int, now: float) -> bool:
        """Dropping cameras are down for `drop_down` s in every `drop_period` s, each at its own phase."""
        return self.has("drop", cam) and self.down_now(cam, now)

    def down_now(self, cam: int, now: float) -> bool:
        """Whether a camera known to drop is in its down time now."""
        return self._cycle(cam, now) < self.drop_down

    def up_for(self, cam: int, now: float) -> float:
        """Seconds since the camera last came back (0 while it is down; infinite for one that never drops)."""
        if not self.has("drop", cam):
            return math.inf
        return max(0.0, self._cycle(cam, now) - self.drop_down)

    def _cycle(self, cam: int, now: float) -> float:
        """Where a dropping camera is in its period: down for the first `drop_down` s, each at its own phase."""
        phase = (cam * 0.6180339887 % 1.0) * self.drop_period
        return (now + phase) % self.drop_period


@functools.lru_cache(maxsize=1 << 18)
def _fault_point(mode: str, cam: int) -> int:
    """A camera's fixed point in [0, 2**32) for one fault mode: it has the fault if the point is under the fraction."""
    return int.from_bytes(hashlib.blake2b(f"{mode}:{cam}".encode(), digest_size=4).digest(), "big")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    clip: Clip
    auth: str = "none"  # none | basic | digest
    user: str = "admin"
    password: str = "admin"
    faults: Faults = field(default_factory=Faults)
    tick: float = 0.01
    frames_per_send: int = 1  # TCP: a camera sends this many frames in one write, every this many frame periods


@dataclass(slots=True)
class Counters:
    sessions: int = 0
    playing: int = 0
    frames: int = 0
    skipped: int = 0  # frames not sent: the client's socket was full, or the farm fell > 1 s behind
    late_ticks: int = 0  # timer ticks that ran more than two ticks late
    dropped_connections: int = 0
    auth_failures: int = 0


class Session(asyncio.Protocol):
    """One RTSP connection (one camera session; a camera may have several)."""

    def __init__(self, farm: Scheduler, settings: Settings, udp: asyncio.DatagramTransport | None) -> None:
        self.farm, self.settings, self.udp = farm, settings, udp
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.cam = -1
        self.session_id = secrets.token_hex(8)
        self.channel = 0
        self.udp_dest: tuple[str, int] | None = None
        self.start_frame = 0  # the scheduler's frame number at PLAY: the clip starts at its keyframe there
        self.playing = False
        self.out: socket.socket | None = None  # while playing over TCP: our own handle on the connection
        self.pending: memoryview | None = None  # the part of the last write the kernel did not take yet
        self.phase = 0  # start_frame mod the clip's length (see Scheduler)
        self.key = (0, 0, 0)  # (phase, start_frame mod frames_per_send, channel): sessions that send the same bytes
        self.silent = self.garbage = self.drops = False  # this camera's faults, set at PLAY
        self.last_seen = time.monotonic()
        self.nonce = secrets.token_hex(16)
        self.base = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports don't subclass asyncio's
        self.farm.counters.sessions += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.farm.counters.sessions -= 1
        self.stop()

    def close(self) -> None:
        self.stop()
        if self.transport is not None:
            self.transport.close()

    def stop(self) -> None:
        if self.playing:
            self.playing = False
            self.farm.remove(self)
        if self.out is not None:
            self.out.close()
            self.out, self.pending = None, None

    def write(self, data: bytes | bytearray) -> bool:
        """Send `data` now; False if it was not sent (the client is this far behind, or gone): a skipped frame.
        A partial send keeps the rest for the next write, so the stream's framing stays whole."""
        out = self.out
        if out is None:
            return self._write_transport(data)
        if self.pending is not None and not self._flush(out):
            return False
        try:
            sent = out.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return False
        if sent < len(data):
            self.pending = memoryview(data)[sent:]
        return True

    def _flush(self, out: socket.socket) -> bool:
        assert self.pending is not None
        try:
            sent = out.send(self.pending)
        except BlockingIOError:
            return False
        except OSError:
            self.close()
            return False
        self.pending = self.pending[sent:] if sent < len(self.pending) else None
        return self.pending is None

    def _write_transport(self, data: bytes | bytearray) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            return False
        transport.write(data)
        return True

    def send_directly(self) -> None:
        """Take over the connection's writes for the media: a duplicate of its socket with a camera-sized send
        queue. Only while the transport has nothing buffered, or our bytes would overtake its."""
        if self.transport is None or self.udp_dest is not None or self.transport.get_write_buffer_size():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            fd = os.dup(sock.fileno())
        except OSError:  # out of descriptors (two per session): this session keeps the transport's writes
            return
        self.out = socket.socket(fileno=fd)
        self.out.setblocking(False)
        self.out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_WRITE_BUFFER)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_seen = time.monotonic()
        while self.buffer:
            if self.buffer[0] == 0x24:  # interleaved RTCP from the client: skip it
                if len(self.buffer) < 4:
                    return
                size = 4 + int.from_bytes(self.buffer[2:4], "big")
                if len(self.buffer) < size:
                    return
                del self.buffer[:size]
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.close()
                return
            head = bytes(self.buffer[:end]).decode("utf-8", "replace")
            headers = _headers(head)
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.request(head.split("\r\n", 1)[0], headers)

    def request(self, line: str, headers: dict[str, str]) -> None:
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("RTSP/"):
            return self.reply(headers, "400 Bad Request")
        method, uri = parts[0].upper(), parts[1]
        if match := CAM_PATH.match(urlsplit(uri).path):
            self.cam = int(match.group(1))
            self.base = uri[: uri.find(f"/cam{self.cam}") + len(f"/cam{self.cam}")]
        if self.cam >= 0 and self.settings.faults.is_down(self.cam, time.time()):
            self.farm.counters.dropped_connections += 1
            return self.close()  # a rebooting camera: the connection just ends
        if method == "OPTIONS":
            return self.reply(headers, "200 OK", [f"Public: {METHODS}"])
        if not self.farm.serves(self.cam):
            return self.reply(headers, "404 Not Found")
        if not self.authorized(method, headers):
            self.farm.counters.auth_failures += 1
            return self.reply(headers, "401 Unauthorized", [self.challenge()])
        handler = {"DESCRIBE": self.describe, "SETUP": self.setup, "PLAY": self.play, "TEARDOWN": self.teardown}
        if method in handler:
            return handler[method](headers)
        if method in ("GET_PARAMETER", "SET_PARAMETER", "PAUSE"):
            return self.reply(headers, "200 OK", self.session_header())
        return self.reply(headers, "405 Method Not Allowed", [f"Allow: {METHODS}"])

    def reply(self, headers: dict[str, str], status: str, extra: Iterable[str] = (), body: str = "") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        data = body.encode()
        lines = [f"RTSP/1.0 {status}", f"CSeq: {headers.get('cseq', '0')}", "Server: goldentime-camfarm", *extra]
        lines.append(f"Content-Length: {len(data)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
        if self.out is None:
            self.transport.write(message)
        elif self.pending is not None:  # behind the media: the reply goes after what is pending
            self.pending = memoryview(bytes(self.pending) + message)
        else:
            self.write(message)

    def session_header(self) -> list[str]:
        return [f"Session: {self.session_id};timeout={SESSION_TIMEOUT}"]

    def challenge(self) -> str:
        if self.settings.auth == "basic":
            return 'WWW-Authenticate: Basic realm="camfarm"'
        return f'WWW-Authenticate: Digest realm="camfarm", nonce="{self.nonce}", algorithm=MD5'

    def authorized(self, method: str, headers: dict[str, str]) -> bool:
        faults, s = self.settings.faults, self.settings
        if faults.has("refuse_auth", self.cam):
            return False
        if s.auth == "none":
            return True
        given = headers.get("authorization", "")
        if s.auth == "basic":
            from base64 import b64encode

            return given == "Basic " + b64encode(f"{s.user}:{s.password}".encode()).decode()
        return given.lower().startswith("digest ") and self.digest_ok(method, given[7:])

    def digest_ok(self, method: str, header: str) -> bool:
        f = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in DIGEST_FIELD.finditer(header)
        }
        if f.get("username") != self.settings.user or f.get("nonce") != self.nonce:
            return False
        ha1 = _md5(f"{self.settings.user}:camfarm:{self.settings.password}")
        ha2 = _md5(f"{method}:{f.get('uri', '')}")
        if f.get("qop"):
            expected = _md5(f"{ha1}:{self.nonce}:{f.get('nc', '')}:{f.get('cnonce', '')}:{f['qop']}:{ha2}")
        else:
            expected = _md5(f"{ha1}:{self.nonce}:{ha2}")
        return secrets.compare_digest(expected, f.get("response", ""))

    def describe(self, headers: dict[str, str]) -> None:
        clip = self.settings.clip
        encoding = "H264" if clip.codec == "h264" else "H265"
        sdp = "\r\n".join(
            [
                "v=0",
                f"o=- {self.farm.ssrc} 1 IN IP4 {self.settings.host}",
                f"s=camfarm camera {self.cam}",
                "c=IN IP4 0.0.0.0",
                "t=0 0",
                "a=control:*",
                "a=range:npt=now-",
                f"m=video 0 RTP/AVP {PAYLOAD_TYPE}",
                f"a=rtpmap:{PAYLOAD_TYPE} {encoding}/90000",
                f"a=fmtp:{PAYLOAD_TYPE} {clip.sdp_fmtp()}",
                f"a=framerate:{clip.fps}",
                f"a=x-dimensions:{clip.width},{clip.height}",
                "a=control:track1",
                "",
            ]
        )
        extra = [f"Content-Base: {self.base}/", "Content-Type: application/sdp"]
        self.reply(headers, "200 OK", extra, sdp)

    def setup(self, headers: dict[str, str]) -> None:
        transport = headers.get("transport", "")
        ssrc = f"ssrc={self.farm.ssrc:08X}"
        if "TCP" in transport.upper().split(";")[0]:
            channels = re.search(r"interleaved=(\d+)", transport)
            self.channel = int(channels.group(1)) if channels else 0
            reply = f"RTP/AVP/TCP;unicast;interleaved={self.channel}-{self.channel + 1};{ssrc}"
        else:
            ports = re.search(r"client_port=(\d+)", transport)
            if self.udp is None or ports is None or self.transport is None:
                return self.reply(headers, "461 Unsupported Transport")
            peer = self.transport.get_extra_info("peername")[0]
            self.udp_dest = (peer, int(ports.group(1)))
            port = self.udp.get_extra_info("sockname")[1]
            reply = f"RTP/AVP;unicast;client_port={ports.group(1)}-{int(ports.group(1)) + 1};"
            reply += f"server_port={port}-{port + 1};{ssrc}"
        self.reply(headers, "200 OK", [f"Transport: {reply}", *self.session_header()])

    def play(self, headers: dict[str, str]) -> None:
        if not self.playing:
            self.playing = True
            self.farm.add(self)  # its first frame goes out at a later tick, after this reply
        seq, rtptime = self.farm.rtp_info(self)
        rtp_info = f"RTP-Info: url={self.base}/track1;seq={seq};rtptime={rtptime}"
        self.reply(headers, "200 OK", [*self.session_header(), "Range: npt=0.000-", rtp_info])
        if self.out is None:
            self.send_directly()

    def teardown(self, headers: dict[str, str]) -> None:
        self.stop()
        self.reply(headers, "200 OK", self.session_header())


class Scheduler:
    """Every playing session of one process, in phase groups; one timer sends what is due.

    RTP numbering follows the group's frame clock: a session that started at frame `start` (its clip keyframe)
    sends at frame n the clip frame k = (n - start) mod L, with seq = seq0 + packets the clip sent before it
    on that schedule and timestamp ts0 + n x step. So sessions with the same start mod L (their `phase`) send
    identical bytes at each n, and the frame is built once per tick for all of them."""

    def __init__(self, settings: Settings, cams: range) -> None:
        self.settings, self.cams = settings, cams
        clip = settings.clip
        self.period = 1.0 / clip.fps
        self.slots = max(1, round(self.period / settings.tick))
        self.groups: list[set[Session]] = [set() for _ in range(self.slots)]
        self.sent = [0] * self.slots  # frames each group has sent (a group's frame number)
        self.counters = Counters()
        self.step = 90000 // clip.fps
        self.max_catchup = clip.fps
        self.garbage = os.urandom(len(clip.frames[1].tcp) if len(clip.frames) > 1 else 2000).replace(b"$", b"#")
        self.t0 = 0.0
        self.ssrc = random.getrandbits(32)
        self.seq0 = random.getrandbits(16)
        self.ts0 = random.getrandbits(32)
        self.before = [0, *itertools.accumulate(len(f.udp) for f in clip.frames)]  # packets before frame k

    def serves(self, cam: int) -> bool:
        return cam in self.cams

    def slot(self, cam: int) -> int:
        return cam % self.slots

    def add(self, session: Session) -> None:
        slot, faults = self.slot(session.cam), self.settings.faults
        session.start_frame = self.sent[slot]
        session.phase = session.start_frame % len(self.settings.clip.frames)
        session.key = (session.phase, session.start_frame % self.settings.frames_per_send, session.channel)
        session.silent, session.garbage = faults.has("silent", session.cam), faults.has("garbage", session.cam)
        session.drops = faults.has("drop", session.cam)
        self.groups[slot].add(session)
        self.counters.playing += 1

    def remove(self, session: Session) -> None:
        self.groups[self.slot(session.cam)].discard(session)
        self.counters.playing -= 1

    def position(self, phase: int, n: int) -> tuple[int, int, int]:
        """(clip frame, first RTP seq, RTP timestamp) of what a session of this phase sends at frame n."""
        loops, k = divmod(n - phase, len(self.settings.clip.frames))
        seq = (self.seq0 + loops * self.before[-1] + self.before[k]) & 0xFFFF
        return k, seq, (self.ts0 + n * self.step) & 0xFFFFFFFF

    def rtp_info(self, session: Session) -> tuple[int, int]:
        """The seq and rtptime of a session's first packet, for the PLAY reply's RTP-Info."""
        _, seq, ts = self.position(session.phase, session.start_frame)
        return seq, ts

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        housekeeping = self.t0
        ticks = 0
        while True:
            ticks += 1
            await asyncio.sleep(max(0.0, self.t0 + ticks * self.settings.tick - loop.time()))
            now = loop.time()
            if now - (self.t0 + ticks * self.settings.tick) > 2 * self.settings.tick:
                self.counters.late_ticks += 1
            self.tick(now - self.t0)
            if now - housekeeping >= 1.0:
                housekeeping = now
                self.housekeeping()

    def tick(self, elapsed: float) -> None:
        for slot in range(self.slots):
            due = int((elapsed - slot * self.period / self.slots) / self.period) + 1
            sent = self.sent[slot]
            if due <= sent:
                continue
            # After a stall the farm catches up (TCP would deliver the backlog as a burst too), but by at most
            # one second: frames older than that are counted as skipped, so a farm that falls behind shows.
            first = max(sent, due - self.max_catchup)
            members = self.groups[slot]
            if first > sent:
                self.counters.skipped += (first - sent) * len(members)
            self.sent[slot] = due
            if members:
                sessions = list(members)  # a failed send closes its session, which leaves the group
                for n in range(first, due):
                    self.send_all(sessions, n)

    def send_all(self, sessions: list[Session], n: int) -> None:
        built: dict[tuple[int, int, int], bytes | bytearray] = {}  # session key -> what those sessions send at n
        per_send = self.settings.frames_per_send
        sent = skipped = 0
        for session in sessions:
            if session.silent or not session.playing:
                continue
            if session.udp_dest is not None:
                self.send_udp(session, n)
                sent += 1
                continue
            data = self.garbage if session.garbage else built.get(session.key)
            if data is None:
                data = built[session.key] = self.tcp_frames(*session.key, n)
            if not data:
                continue  # frames_per_send > 1 and this camera's batch is not due yet
            frames = 1 if session.garbage else per_send
            if session.write(data):
                sent += frames
            elif session.playing:  # not a client that went away: one that is this far behind
                skipped += frames
        self.counters.frames += sent
        self.counters.skipped += skipped

    def tcp_frames(self, phase: int, offset: int, channel: int, n: int) -> bytes | bytearray:
        """The bytes a session with this key sends at frame n: its frame, or with frames_per_send K > 1 the
        K frames that end at n when its batch is due (empty otherwise)."""
        per_send = self.settings.frames_per_send
        if per_send == 1:
            return self.tcp_frame(phase, channel, n)
        if (n - offset) % per_send != per_send - 1:
            return b""
        return b"".join(self.tcp_frame(phase, channel, m) for m in range(n - per_send + 1, n + 1))

    def tcp_frame(self, phase: int, channel: int, n: int) -> bytearray:
        k, seq, ts = self.position(phase, n)
        frame = self.settings.clip.frames[k]
        buf = bytearray(frame.tcp)
        for offset in frame.tcp_offsets:
            RTP_FIELDS.pack_into(buf, offset + 2, seq, ts, self.ssrc)
            if channel:
                buf[offset - 3] = channel
            seq = (seq + 1) & 0xFFFF
        return buf

    def send_udp(self, session: Session, n: int) -> None:
        k, seq, ts = self.position(session.phase, n)
        assert session.udp is not None and session.udp_dest is not None
        for packet in self.settings.clip.frames[k].udp:
            buf = bytearray(packet)
            RTP_FIELDS.pack_into(buf, 2, seq, ts, self.ssrc)
            session.udp.sendto(buf, session.udp_dest)
            seq = (seq + 1) & 0xFFFF

    def housekeeping(self) -> None:
        """Drop the sessions of cameras that go down now, and sessions whose client went quiet."""
        now, wall = time.monotonic(), time.time()
        for group in self.groups:
            for session in list(group):
                if session.drops and self.settings.faults.down_now(session.cam, wall):
                    self.counters.dropped_connections += 1
                    session.close()
                elif session.udp_dest is not None and now - session.last_seen > SESSION_TIMEOUT:
                    session.close()


def _headers(head: str) -> dict[str, str]:
    out = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
