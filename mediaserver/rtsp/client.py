"""One RTSP session with one camera: OPTIONS, DESCRIBE, SETUP (TCP interleaved or UDP), PLAY, keep-alive,
TEARDOWN. It knows nothing of the hub: it hands access units to a `UnitSink` (mediaserver/sink.py).

A camera's frames, top-down: TCP bytes arrive in `data_received` (or, unwatched, from the batch reader:
batch_reader.py) -> core_ext/framing.pyx splits `$` frames into the channel's depacketiser (core_ext/
depacketize.pyx) -> completed access units go to the sink's C cache (`sink.cache`, core_ext/gop.pyx) while
nobody watches, else to `_unit` -> `sink.put` (Hub.put). RTP over UDP takes the same path from udp.py
(core_ext/udprecv.pyx). The watchdog (watchdog.py) fails a session that completes no unit for `stall` s."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from core_ext.depacketize import AccessUnit, H264Depacketizer, H265Depacketizer
from core_ext.framing import FramingError, InterleavedDemuxer
from core_ext.gop import starts_with_parameter_sets
from core_ext.udprecv import UdpReceiver
from mediaserver.rtsp.auth import Authenticator
from mediaserver.rtsp.batch_reader import BatchReader
from mediaserver.rtsp.errors import ErrorKind, RtspError
from mediaserver.rtsp.message import Response, build_request, parse_message, parse_session, parse_transport, port_pair
from mediaserver.rtsp.sdp import MediaDescription, control_url, parse_sdp
from mediaserver.rtsp.tls import DEFAULT_PORT as RTSPS_PORT
from mediaserver.rtsp.tls import check_pin, client_context, normalise_fingerprint
from mediaserver.rtsp.udp import UdpRtp, open_rtp, parse_ssrc
from mediaserver.rtsp.watchdog import Progress, Watchdog
from mediaserver.sink import UnitSink

log = logging.getLogger("goldentime.rtsp")

Depacketizer = H264Depacketizer | H265Depacketizer
ALLOW_BASIC = "allow_basic"  # the URL query flag of a camera that may be sent Basic credentials in clear
TLS_SHA256 = "tls_sha256"  # the URL query parameter pinning an rtsps:// camera's certificate (tls.py)


@dataclass(frozen=True, slots=True)
class Source:
    """How to reach a camera. The URL carries no credentials; they stay here, on the server."""

    url: str
    username: str | None = None
    password: str | None = None
    transport: str = "tcp"  # "tcp" (interleaved) or "udp"
    allow_basic: bool = False  # answer a Basic-only challenge over plain TCP (the password goes in clear)
    tls_sha256: str | None = None  # rtsps://: the certificate's pinned SHA-256 fingerprint (tls.py)

    @classmethod
    def of_camera(cls, url: str, username: str | None, password: str | None, transport: str = "tcp") -> Source:
        """A registry URL's `allow_basic=1` and `tls_sha256=...` query parameters are ours, not the camera's: they
        configure this camera's session and are not sent to it."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {key: value for key, value in query if key in (ALLOW_BASIC, TLS_SHA256)}
        if not ours:
            return cls(url, username, password, transport)
        rest = urlencode([(k, v) for k, v in query if k not in ours])
        clean = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        allow_basic = ours.get(ALLOW_BASIC, "").lower() in ("1", "true", "yes")
        return cls(clean, username, password, transport, allow_basic, ours.get(TLS_SHA256) or None)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    response: float = 5.0
    stall: float = 5.0  # no media for this long: the camera is gone
    first_keyframe: float = 10.0  # PLAY answered but no decodable keyframe yet


class RtspClient(asyncio.Protocol):
    """With a `batch` reader, a TCP session that plays while `watched()` is false leaves the event loop's
    reads and is read by the batch reader a few times a second (batch_reader.py); it returns to reading
    every packet as soon as `watched()` is true. Over UDP the RTP socket does the same (udp.py). With the sink's
    `cache`, the demuxer or the UDP receiver adds an unwatched camera's frames there itself (mediaserver/sink.py).
    It is the sink's `CatchUp` (read_now, go_live)."""

    def __init__(
        self,
        source: Source,
        sink: UnitSink,
        timeouts: Timeouts,
        batch: BatchReader | None = None,
        watched: Callable[[], bool] | None = None,
    ) -> None:
        self.source = source
        self.name = source.url.split("@")[-1]
        self.timeouts = timeouts
        self._put = sink.put
        self._demuxer = InterleavedDemuxer()
        self._transport: asyncio.Transport | None = None
        self._udp: list[asyncio.DatagramTransport] = []  # RTCP
        self._rtp: UdpRtp | None = None
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._keepalive: asyncio.Task[None] | None = None
        self._keepalive_every = 30.0
        self._next_keepalive = 0.0
        self._cseq = 0
        tls = source.url.lower().startswith("rtsps:")
        self._auth = (
            Authenticator(source.username, source.password or "", allow_basic=source.allow_basic or tls)
            if source.username
            else None
        )
        self._session = ""
        self._session_timeout = 60
        self._public: set[str] = set()
        self.codec = ""
        self.depacketizer: Depacketizer | None = None
        self.started_at = time.monotonic()
        self.last_media_at = 0.0
        self.have_keyframe = False
        self.server_requests = 0
        self.warnings: list[str] = []  # kinds of oddities that did not stop the session
        self.reads = 0  # data_received calls (RTP over UDP: see socket_reads)
        self._batch = batch
        self._watched = watched or (lambda: True)
        self._cache = sink.cache  # unwatched frames go there from C (not through _unit)
        self._demuxer.cache = sink.cache
        self._progress = Progress(timeouts.stall)
        self._batched = False
        self._fileno = -1
        self._playing = False

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass asyncio's
        sock = transport.get_extra_info("socket")
        # TLS: the raw socket carries ciphertext, so the batch reader (and FIONREAD) must not read it: no fd
        tls = transport.get_extra_info("ssl_object") is not None
        self._fileno = sock.fileno() if sock is not None and not tls else -1

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        self._feed(data)
        if self._playing and self._batch is not None and not self._batched and not self._watched():
            self._join_batch()

    def _feed(self, data: bytes) -> None:
        try:
            items = self._demuxer.feed(data)
        except FramingError as e:
            self._fail(RtspError(ErrorKind.FRAMING, str(e)))
            return
        for item in items:
            if isinstance(item, bytes):
                self._message(item)
            else:
                self._unit(item)

    # --- batched reads while nobody watches (batch_reader.BatchClient) ---
    def _join_batch(self) -> None:
        if self._batch is None or self._transport is None or self._fileno < 0 or self._failed.done():
            return
        self._transport.pause_reading()
        self._batched = True
        self._batch.add(self)

    def _leave_batch(self) -> None:
        if self._batched and self._batch is not None:
            self._batch.discard(self)
        self._batched = False

    def watched(self) -> bool:
        return self._watched()

    def batch_fileno(self) -> int:
        return self._fileno

    def batch_data(self, data: bytes) -> None:
        self.reads += 1
        self._feed(data)

    def batch_error(self, exc: Exception | None) -> None:
        self._batched = False
        self.connection_lost(exc)

    def leave_batch(self) -> None:
        self._batched = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # --- sink.CatchUp: bring a batched camera to the present ---
    def read_now(self) -> None:
        if self._rtp is not None:
            self._rtp.read_now()
        elif self._batched and self._batch is not None:
            self._batch.read_now(self)

    def go_live(self) -> None:
        if self._rtp is not None:
            self._rtp.go_live()
        elif self._batched and self._batch is not None:
            self._batch.discard(self)
            self.leave_batch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RtspError(ErrorKind.CONNECTION_LOST, f"camera closed the connection ({exc or 'EOF'})"))

    def _fail(self, error: RtspError) -> None:
        self._leave_batch()  # before the transport closes the fd: the batch reader must never read a reused fd
        if not self._failed.done():
            self._failed.set_exception(error)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _udp_failed(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError):
            self._fail(RtspError(ErrorKind.UDP_SOCKET, f"RTP socket failed: {exc.strerror or exc}"))
        else:
            self._fail(RtspError(ErrorKind.INTERNAL, f"RTP over UDP: {exc!r}"))

    @property
    def socket_reads(self) -> int:
        """Reads of this camera's sockets: the wake-ups it cost (RTSP connection + RTP over UDP)."""
        return self.reads + (self._rtp.receiver.reads if self._rtp is not None else 0)

    @property
    def rtp_address(self) -> tuple[str, int] | None:
        """Where this session receives RTP over UDP (None over TCP)."""
        return self._rtp.address if self._rtp is not None else None

    @property
    def udp_receiver(self) -> UdpReceiver | None:
        """The RTP socket's reader and its counters (None over TCP)."""
        return self._rtp.receiver if self._rtp is not None else None

    def udp_counters(self) -> dict[str, int]:
        """Datagrams dropped before RTP parsing (bad RTP is counted by the depacketiser's stats)."""
        receiver = self.udp_receiver
        if receiver is None:
            return {}
        return {
            "foreign_datagrams": receiver.foreign,
            "foreign_ssrc_datagrams": receiver.foreign_ssrc,
            "oversized_datagrams": receiver.oversized,
        }

    def _message(self, raw: bytes) -> None:
        try:
            response = parse_message(raw)
        except RtspError as e:
            self._fail(e)
            return
        if response is None:
            self.server_requests += 1  # e.g. a server's GET_PARAMETER ping: nothing we must act on
            return
        future = self._pending.pop(response.cseq, None)
        if future is not None and not future.done():
            future.set_result(response)

    def _unit(self, unit: AccessUnit) -> None:
        self.last_media_at = time.monotonic()
        if unit.keyframe:
            if not starts_with_parameter_sets(self.codec, unit.data):
                return  # undecodable on its own: the first-keyframe watchdog reports it
            self.have_keyframe = True
        if self.have_keyframe:
            self._put(unit)

    # --- requests ---
    async def _request(self, method: str, url: str, headers: dict[str, str] | None = None) -> Response:
        response = await self._send(method, url, headers)
        if response.status == 401 and self._auth is not None and not self._auth.ready:
            self._auth.challenge(response.header("www-authenticate"))
            response = await self._send(method, url, headers)
        if response.status == 401:
            raise RtspError(ErrorKind.AUTH_FAILED, f"{method}: camera refused the credentials (401)")
        if response.status != 200:
            raise RtspError(ErrorKind.RTSP_STATUS, f"{method}: {response.status} {response.reason}")
        return response

    async def _send(self, method: str, url: str, headers: dict[str, str] | None) -> Response:
        if self._transport is None or self._failed.done():
            raise RtspError(ErrorKind.CONNECTION_LOST, f"{method}: not connected")
        self._cseq += 1
        all_headers = dict(headers or {})
        if self._session:
            all_headers["Session"] = self._session
        if self._auth is not None and self._auth.ready:
            all_headers["Authorization"] = self._auth.header(method, url)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[self._cseq] = future
        self._transport.write(build_request(method, url, self._cseq, all_headers))
        try:
            return await asyncio.wait_for(future, self.timeouts.response)
        except TimeoutError:
            self._pending.pop(self._cseq, None)
            raise RtspError(ErrorKind.TIMEOUT, f"{method}: no answer within {self.timeouts.response:g} s") from None

    # --- the session ---
    async def start(self) -> None:
        """Connect and play; raises RtspError (with a kind for the counters) on any failure."""
        loop = asyncio.get_running_loop()
        host, port, tls = _host_port(self.source.url)
        pinned = normalise_fingerprint(self.source.tls_sha256) if tls and self.source.tls_sha256 else None
        context = client_context(pinned) if tls else None
        connect = loop.create_connection(lambda: self, host, port, ssl=context, server_hostname=host if tls else None)
        try:
            transport, _ = await asyncio.wait_for(connect, self.timeouts.connect)
        except TimeoutError:
            raise RtspError(
                ErrorKind.CONNECT_TIMEOUT, f"no TCP connection within {self.timeouts.connect:g} s"
            ) from None
        except ssl.SSLCertVerificationError as e:
            raise RtspError(
                ErrorKind.TLS, f"camera certificate not trusted ({e.verify_message}): pin it with {TLS_SHA256}=..."
            ) from None
        except ssl.SSLError as e:  # an OSError too: the handshake failed
            raise RtspError(ErrorKind.TLS, f"TLS with the camera failed: {e.reason or e}") from None
        except OSError as e:
            raise RtspError(ErrorKind.CONNECT_FAILED, f"cannot connect: {e.strerror or e}") from None
        if tls:
            check_pin(transport.get_extra_info("ssl_object"), pinned)
        options = await self._request("OPTIONS", self.source.url)
        self._public = {m.strip().upper() for m in options.header("public").split(",")}
        media, base = await self._describe()
        await self._setup(media, control_url(base, media.control))
        await self._request("PLAY", base, {"Range": "npt=0.000-"})
        self.last_media_at = time.monotonic()
        self._playing = self.source.transport == "tcp"  # the RTP socket over UDP joins the batch on its own

    async def _describe(self) -> tuple[MediaDescription, str]:
        response = await self._request("DESCRIBE", self.source.url, {"Accept": "application/sdp"})
        try:
            sdp = parse_sdp(response.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise RtspError(ErrorKind.MALFORMED_SDP, "SDP is not UTF-8") from None
        base = response.header("content-base") or response.header("content-location") or self.source.url
        base = control_url(base, sdp.control) if sdp.control.lower().startswith("rtsp") else base
        media = sdp.video()
        self.codec = media.codec or ""
        depacketizer_class = H265Depacketizer if self.codec == "h265" else H264Depacketizer
        self.depacketizer = depacketizer_class(payload_type=media.payload_type)
        parameter_sets = media.parameter_sets()
        if parameter_sets:
            self.depacketizer.set_parameter_sets(parameter_sets)
        else:
            self.warnings.append("sdp_no_parameter_sets")
            log.warning("%s: SDP has no parameter sets; waiting for them in-band", self.name)
        return media, base

    async def _setup(self, media: MediaDescription, url: str) -> None:
        assert self.depacketizer is not None
        if self.source.transport == "udp":
            rtp_port = await self._open_udp()
            transport = f"RTP/AVP;unicast;client_port={rtp_port}-{rtp_port + 1}"
        else:
            transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
        response = await self._request("SETUP", url, {"Transport": transport})
        self._session, self._session_timeout = parse_session(response.header("session"))
        params = parse_transport(response.header("transport"))
        if self.source.transport == "tcp":
            channel, _ = port_pair(params.get("interleaved", "0-1"))
            self._demuxer.add_channel(channel, self.depacketizer)
        elif self._rtp is not None:  # RTP only from the port and SSRC the camera announced (else the first seen)
            server_port = port_pair(params["server_port"])[0] if params.get("server_port") else 0
            self._rtp.pin(server_port or None, parse_ssrc(params.get("ssrc", "")))

    async def _open_udp(self) -> int:
        assert self._transport is not None and self.depacketizer is not None
        local_ip = self._transport.get_extra_info("sockname")[0]
        camera_ip = self._transport.get_extra_info("peername")[0]
        self._rtp, rtcp, port = await open_rtp(
            local_ip,
            camera_ip,
            self.depacketizer,
            self._cache,
            self._unit,
            self._watched,
            self._udp_failed,
            self._batch,
        )
        self._udp = [rtcp]
        return port

    async def run(self) -> None:
        """Keep the session alive until it fails; raises RtspError saying why. The checks (media stalled, first
        keyframe, keep-alive due) run on the event loop's shared `Watchdog`, not on a timer of this session."""
        self._keepalive_every = max(self._session_timeout / 2, 1.0)
        self._next_keepalive = time.monotonic() + self._keepalive_every
        watchdog = Watchdog.of(asyncio.get_running_loop())
        watchdog.add(self)
        try:
            await asyncio.wait([self._failed])
            self._failed.result()  # raises the recorded error
        finally:
            watchdog.discard(self)
            if self._keepalive is not None:
                self._keepalive.cancel()

    def watch(self, now: float) -> None:
        """watchdog.Watched: called about twice a second."""
        try:
            self._check_media(now)
        except RtspError as exc:
            self._fail(exc)
            return
        if now >= self._next_keepalive and self._keepalive is None:
            self._next_keepalive = now + self._keepalive_every
            self._keepalive = asyncio.get_running_loop().create_task(self._send_keepalive())

    async def _send_keepalive(self) -> None:
        method = "GET_PARAMETER" if "GET_PARAMETER" in self._public else "OPTIONS"
        try:
            await self._request(method, self.source.url)
        except RtspError as exc:
            self._fail(exc)
        finally:
            self._keepalive = None

    @property
    def media_at(self) -> float:
        """When a complete unit last arrived (monotonic): through _unit, or one the receiver cached itself in C."""
        if self._cache is not None:
            return max(self.last_media_at, self._cache.last_unit_at)
        return self.last_media_at

    def _check_media(self, now: float) -> None:
        if self._progress.stalled(now, self.media_at, self._input_count(), self._media_fds):
            raise RtspError(ErrorKind.STALLED, f"no complete access unit for {self.timeouts.stall:g} s")
        if not self.have_keyframe and now - self.started_at > self.timeouts.first_keyframe:
            raise RtspError(
                ErrorKind.NO_KEYFRAME,
                f"no decodable keyframe within {self.timeouts.first_keyframe:g} s "
                "(parameter sets neither in the SDP nor in-band?)",
            )

    def _input_count(self) -> int:
        """What was read from the media socket so far (interleaved frames, or RTP datagrams over UDP)."""
        return self._rtp.input_count if self._rtp is not None else self._demuxer.frames

    def _media_fds(self) -> list[int]:
        return [self._rtp.fd] if self._rtp is not None else [self._fileno]

    async def close(self) -> None:
        """TEARDOWN if we can (best effort, briefly), then close every socket, even when cancelled."""
        try:
            if self._session and self._transport is not None and not self._failed.done():
                await asyncio.wait_for(self._send("TEARDOWN", self.source.url, None), 0.5)
        except (RtspError, TimeoutError):
            pass
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        self._leave_batch()
        if self._transport is not None:
            self._transport.close()
        if self._rtp is not None:
            self._rtp.close()
        for udp in self._udp:
            udp.close()
        if not self._failed.done():
            self._failed.cancel()
        elif not self._failed.cancelled():
            self._failed.exception()  # mark it retrieved: the ingest loop has logged it already


def _host_port(url: str) -> tuple[str, int, bool]:
    """(host, port, TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
        raise RtspError(ErrorKind.BAD_URL, "camera URL must be rtsp[s]://host[:port]/path")
    tls = parts.scheme == "rtsps"
    try:
        port = parts.port or (RTSPS_PORT if tls else 554)
    except ValueError:
        raise RtspError(ErrorKind.BAD_URL, "camera URL has an invalid port") from None
    return parts.hostname, port, tls
