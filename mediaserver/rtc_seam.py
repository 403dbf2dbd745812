"""The one module that knows aiortc's, aioice's and pylibsrtp's private names.

fanout.py sends a viewer's RTP itself (core_ext.fanout) instead of aiortc's per-packet Python loop, and egress.py
chooses the ICE host addresses and which remote candidates may be checked. Both need internals these libraries
do not export; only this module reaches them, and it hands the rest of the code:
- `Wire`: a frozen description of one sender's wire (SSRCs, payload types, mid, header extension ids, the SRTP
  context, the selected ICE pair's socket and peer), read when aiortc starts the sender;
- `take_over(sender, loops)`: the sender's RTP and RTCP loops, retransmissions and keyframe requests are
  `loops`' (the started/exited events that aiortc's `stop()` waits on are kept);
- `peer(sender)`: the ICE pair selected now (it may change: fanout re-reads it every RTCP interval);
- `use_ice_hosts(hosts)`: the addresses ICE gathers host candidates on, in this context;
- `filter_remote_candidates(check)`: which remote candidates aioice may pair (and so send checks to), in this
  context; peer-reflexive candidates (learned from the viewer's own checks to us) are not signalled, so not
  filtered;
- `SharedCertificate` and `use_certificate(cert)`: peer connections made in this context use this one DTLS
  certificate (aiortc 1.16's RTCConfiguration takes none: each RTCPeerConnection generates its own), and its
  OpenSSL context is built once instead of per DTLS transport;
- `send_only()`: receivers made in this context get no remote bitrate estimator (aiortc builds one per video
  receiver, 1,000 rate buckets, ~0.5 ms; a send-only session never receives media for it to estimate).

At import `check()` builds a sender on dummy transports (a DTLS handshake over in-memory queues, as aiortc's own
tests do), takes it over, starts and stops it and reads its wire: a missing or moved name fails the import with
`SeamError`, naming it and the versions found. pyproject.toml pins the three libraries' minor versions; a bump
must pass this check (and tests/test_rtc_seam.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.metadata
import inspect
import logging
import random
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import aioice
import aioice.ice
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
from aiortc import RTCCertificate, RTCDtlsTransport, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import SRTPProtectionProfile
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import RtcpByePacket, RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket
from pylibsrtp import Session
from pylibsrtp._binding import ffi, lib

log = logging.getLogger(__name__)

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class SeamError(ImportError):
    """aiortc, aioice or pylibsrtp no longer has a private name this server relies on."""


def versions() -> str:
    found = []
    for name in ("aiortc", "aioice", "pylibsrtp"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _missing(what: str) -> SeamError:
    return SeamError(f"{what}; found {versions()}: pyproject.toml pins the versions mediaserver/rtc_seam.py knows")


def _get(obj: object, name: str, label: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise _missing(f"missing {label} ({name})") from None


# --- the wire of one sender ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Peer:
    """Where the viewer's media goes: our socket of the selected ICE pair, and the viewer's address."""

    fd: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Wire:
    ssrc: int
    payload_type: int
    rtx_ssrc: int | None  # None: no RTX negotiated
    rtx_payload_type: int | None
    mid: bytes
    mid_id: int  # header extension ids; 0: not negotiated
    abs_send_time_id: int
    cname: str | None
    srtp_ctx: int  # the address of the sender's libsrtp context (srtp_t)
    srtp_protect: int  # the address of srtp_protect in that same libsrtp (so the same struct layout)
    srtp_session: object  # the pylibsrtp Session owning srtp_ctx: keep it referenced while sending
    peer: Peer


def _private(sender: RTCRtpSender, name: str) -> Any:
    return _get(sender, f"_RTCRtpSender__{name}", f"RTCRtpSender.__{name}")


# srtp_protect of the libsrtp that aiortc's SRTP sessions live in; core_ext.fanout calls it through this address
_PROTECT_TYPE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"
if ffi.getctype(ffi.typeof(lib.srtp_protect)) != _PROTECT_TYPE:
    raise _missing(f"unexpected libsrtp API: srtp_protect is {ffi.typeof(lib.srtp_protect)}, not {_PROTECT_TYPE}")
SRTP_PROTECT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))


def srtp_context(session: Session) -> int:
    """The address of a pylibsrtp session's libsrtp context."""
    return int(ffi.cast("uintptr_t", _get(session, "_srtp", "pylibsrtp Session._srtp")[0]))


def wire(sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> Wire:
    """The wire of a sender aiortc is starting (`send()` configured it; DTLS is connected)."""
    if codec.payloadType is None:
        raise ConnectionError("no payload type negotiated")
    srtp = _get(sender.transport, "_tx_srtp", "RTCDtlsTransport._tx_srtp")
    if srtp is None:
        raise ConnectionError("DTLS is not connected")
    ids = _get(_private(sender, "rtp_header_extensions_map"), "_HeaderExtensionsMap__ids", "HeaderExtensionsMap.__ids")
    rtx_type = _private(sender, "rtx_payload_type")
    return Wire(
        ssrc=_get(sender, "_ssrc", "RTCRtpSender._ssrc"),
        payload_type=codec.payloadType,
        rtx_ssrc=None if rtx_type is None else _get(sender, "_rtx_ssrc", "RTCRtpSender._rtx_ssrc"),
        rtx_payload_type=rtx_type,
        mid=(_private(sender, "mid") or "").encode(),
        mid_id=ids.mid or 0,
        abs_send_time_id=ids.abs_send_time or 0,
        cname=_private(sender, "cname"),
        srtp_ctx=srtp_context(srtp),
        srtp_protect=SRTP_PROTECT,
        srtp_session=srtp,
        peer=peer(sender),
    )


def _connection(sender: RTCRtpSender) -> Any:
    return _get(sender.transport.transport, "_connection", "RTCIceTransport._connection")


def peer(sender: RTCRtpSender) -> Peer:
    """The socket and viewer address of the ICE pair aioice sends this sender's media with now."""
    pair = _get(_connection(sender), "_nominated", "aioice Connection._nominated").get(1)
    if pair is None:
        raise ConnectionError("no selected ICE candidate pair")
    sock = pair.protocol.transport.get_extra_info("socket")
    if sock is None:
        raise ConnectionError("the ICE pair has no socket")
    host, port = pair.remote_addr
    return Peer(sock.fileno(), host, port)


# --- taking over a sender ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Counters:
    """What a sender report says (RFC 3550 6.4.1)."""

    ntp_timestamp: int
    rtp_timestamp: int
    packets: int
    octets: int


class Loops(Protocol):
    """What replaces a sender's loops (fanout.FastSender)."""

    async def send(self, wire: Wire) -> None:
        """The RTP loop: sends until it returns or aiortc cancels it (the sender stops)."""

    def report(self, peer: Peer) -> Counters | None:
        """Every RTCP interval, with the pair selected now: the sender report's counters (None: skip this one)."""

    def retransmit(self, sequence_number: int) -> None:
        """A NACK asked for this packet again."""

    def keyframe(self) -> None:
        """A PLI or FIR asked for a keyframe."""


# aiortc's RTCRtpSender methods that take_over replaces on the instance (send() starts the first two as tasks)
REPLACED = ("_run_rtp", "_run_rtcp", "_retransmit", "_send_keyframe")


def take_over(sender: RTCRtpSender, loops: Loops) -> None:
    """Make `loops` the sender's RTP loop, RTCP reports, retransmissions and keyframe requests."""
    rtp_started, rtp_exited = _private(sender, "rtp_started"), _private(sender, "rtp_exited")
    rtcp_started, rtcp_exited = _private(sender, "rtcp_started"), _private(sender, "rtcp_exited")
    send_rtcp = _get(sender, "_send_rtcp", "RTCRtpSender._send_rtcp")
    for name in REPLACED:
        _get(sender, name, f"RTCRtpSender.{name}")

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        rtp_started.set()
        try:
            await loops.send(wire(sender, codec))
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:
            log.exception("viewer sender failed")
        finally:
            rtp_exited.set()  # aiortc's stop() waits for it

    async def run_rtcp() -> None:
        rtcp_started.set()
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())  # RFC 3550's [0.5, 1.5] x interval, as aiortc
                await _report(sender, loops, send_rtcp)
        except asyncio.CancelledError:
            pass
        finally:
            await send_rtcp([RtcpByePacket(sources=[sender._ssrc])])  # ConnectionError is caught inside
            rtcp_exited.set()

    async def retransmit(sequence_number: int) -> None:
        loops.retransmit(sequence_number)

    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._run_rtcp = run_rtcp  # type: ignore[method-assign]
    sender._retransmit = retransmit  # type: ignore[method-assign]
    sender._send_keyframe = loops.keyframe  # type: ignore[method-assign]


async def _report(sender: RTCRtpSender, loops: Loops, send_rtcp: Callable[[list[Any]], Any]) -> None:
    try:
        counters = loops.report(peer(sender))
    except ConnectionError:
        return  # no pair now (ICE is closing): nothing to report
    except Exception:
        log.exception("viewer sender report failed")
        return
    if counters is None:
        return
    info = RtcpSenderInfo(
        ntp_timestamp=counters.ntp_timestamp,
        rtp_timestamp=counters.rtp_timestamp,
        packet_count=counters.packets & 0xFFFFFFFF,
        octet_count=counters.octets & 0xFFFFFFFF,
    )
    packets: list[Any] = [RtcpSrPacket(ssrc=sender._ssrc, sender_info=info)]
    cname = _private(sender, "cname")
    if cname is not None:
        packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode())])]))
    await send_rtcp(packets)


# --- ICE: host addresses and remote candidates -------------------------------------------------------------------
# aioice gathers host candidates from `aioice.ice.get_host_addresses()` (which always skips 127.0.0.1) and checks
# every signalled remote candidate with `aioice.ice.validate_remote_candidate()` before pairing it (an mDNS one
# once resolved). Both are module functions aioice looks up when it calls them, so wrapping them here applies
# to every connection; a context variable holds each call's choice (the tasks aiortc starts inherit it), and
# outside these contexts aioice's own behaviour stands (e.g. the tests' own aiortc viewers).
_ice_hosts: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("ice_hosts", default=None)
CandidateCheck = Callable[[str, str], str | None]  # (address, transport) -> why it is refused, or None
_candidate_check: contextvars.ContextVar[CandidateCheck | None] = contextvars.ContextVar("candidates", default=None)
aioice_host_addresses = _get(aioice.ice, "get_host_addresses", "aioice.ice.get_host_addresses")
_aioice_validate = _get(aioice.ice, "validate_remote_candidate", "aioice.ice.validate_remote_candidate")


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    hosts = _ice_hosts.get()
    return list(hosts) if hosts is not None else aioice_host_addresses(use_ipv4, use_ipv6)


def _validate_remote_candidate(candidate: Any, host: str) -> str:
    address: str = _aioice_validate(candidate, host)
    check = _candidate_check.get()
    refused = None if check is None else check(address, str(candidate.transport).lower())
    if refused is not None:
        raise ValueError(refused)  # aioice logs it and drops the candidate: it is never paired
    return address


aioice.ice.get_host_addresses = _host_addresses
aioice.ice.validate_remote_candidate = _validate_remote_candidate


@contextmanager
def use_ice_hosts(hosts: list[str] | None) -> Iterator[None]:
    """Gather ICE host candidates on exactly these addresses in this context (None: aioice's default)."""
    token = _ice_hosts.set(hosts)
    try:
        yield
    finally:
        _ice_hosts.reset(token)


@contextmanager
def filter_remote_candidates(check: CandidateCheck | None) -> Iterator[None]:
    """Remote candidates signalled in this context (setRemoteDescription, addIceCandidate) are paired only if
    `check(address, transport)` returns None; else aioice drops them, logging the reason returned."""
    token = _candidate_check.set(check)
    try:
        yield
    finally:
        _candidate_check.reset(token)


# --- one DTLS certificate for many connections ------------------------------------------------------------------
# RTCPeerConnection.__init__ calls `RTCCertificate.generateCertificate()` through its module's global name, and
# every RTCDtlsTransport.start() calls its certificate's `_create_ssl_context()`. A context variable chooses a
# shared certificate for the connections made in a context; outside it aiortc generates one per connection.
class SharedCertificate(RTCCertificate):
    """A certificate for many connections: its OpenSSL context (key, cipher list, SRTP profiles) is built once
    per set of SRTP profiles. Each connection still gets its own SSL.Connection, so its own DTLS keys."""

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key=key, cert=cert)
        self._contexts: dict[tuple[bytes, ...], Any] = {}

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> Any:  # an OpenSSL SSL.Context
        key = tuple(p.openssl_profile for p in srtp_profiles)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = super()._create_ssl_context(srtp_profiles)
        return ctx


_certificate: contextvars.ContextVar[RTCCertificate | None] = contextvars.ContextVar("certificate", default=None)
_aiortc_certificate = _get(aiortc.rtcpeerconnection, "RTCCertificate", "aiortc.rtcpeerconnection.RTCCertificate")
_get(_aiortc_certificate, "_create_ssl_context", "RTCCertificate._create_ssl_context")


class _CertificateChoice:
    """Stands in for the RTCCertificate name inside aiortc.rtcpeerconnection (only generateCertificate is used)."""

    @staticmethod
    def generateCertificate() -> RTCCertificate:  # aiortc's name
        shared = _certificate.get()
        return shared if shared is not None else _aiortc_certificate.generateCertificate()


aiortc.rtcpeerconnection.RTCCertificate = _CertificateChoice  # type: ignore[misc,assignment]


@contextmanager
def use_certificate(certificate: RTCCertificate | None) -> Iterator[None]:
    """RTCPeerConnections made in this context use this certificate (None: aiortc's own, one per connection)."""
    token = _certificate.set(certificate)
    try:
        yield
    finally:
        _certificate.reset(token)


def certificates(pc: Any) -> list[RTCCertificate]:
    """The DTLS certificates a peer connection uses."""
    found: list[RTCCertificate] = _get(pc, "_RTCPeerConnection__certificates", "RTCPeerConnection.__certificates")
    return found


# --- send-only sessions: no receive-side estimator -----------------------------------------------------------------
# RTCRtpReceiver.__init__ builds `RemoteBitrateEstimator()` through its module's global name for every video
# receiver, and checks it for None before each use (audio receivers have none).
_send_only: contextvars.ContextVar[bool] = contextvars.ContextVar("send_only", default=False)
_aiortc_estimator = _get(
    aiortc.rtcrtpreceiver, "RemoteBitrateEstimator", "aiortc.rtcrtpreceiver.RemoteBitrateEstimator"
)


def _estimator() -> Any:
    return None if _send_only.get() else _aiortc_estimator()


aiortc.rtcrtpreceiver.RemoteBitrateEstimator = _estimator  # type: ignore[misc,assignment]


@contextmanager
def send_only() -> Iterator[None]:
    """Receivers (transceivers) made in this context build no remote bitrate estimator."""
    token = _send_only.set(True)
    try:
        yield
    finally:
        _send_only.reset(token)


def _estimator_of(receiver: Any) -> Any:
    return _get(receiver, "_RTCRtpReceiver__remote_bitrate_estimator", "RTCRtpReceiver.__remote_bitrate_estimator")


# --- the import-time check ---------------------------------------------------------------------------------------
class _Queues:
    """One side of an in-memory datagram link (aiortc's tests/utils.py DummyConnection)."""

    def __init__(self, rx: asyncio.Queue[bytes | None], tx: asyncio.Queue[bytes | None]) -> None:
        self.rx, self.tx = rx, tx

    async def _recv(self) -> bytes:
        data = await self.rx.get()
        if data is None:
            raise ConnectionError
        return data

    async def _send(self, data: bytes) -> None:
        await self.tx.put(data)


class _DummyIce(_Queues):
    """aiortc's tests' DummyIceTransport, with a real (never connected) aioice Connection for the ICE names."""

    def __init__(self, rx: asyncio.Queue[bytes | None], tx: asyncio.Queue[bytes | None], role: str) -> None:
        super().__init__(rx, tx)
        self.role = role
        self._connection = aioice.Connection(ice_controlling=role == "controlling")

    async def stop(self) -> None:
        await self.rx.put(None)


class _ProbeLoops:
    def __init__(self) -> None:
        self.sending = asyncio.Event()

    async def send(self, wire: Wire) -> None:
        self.sending.set()
        await asyncio.Event().wait()  # until stop() cancels it

    def report(self, peer: Peer) -> Counters | None:
        return None

    def retransmit(self, sequence_number: int) -> None:
        pass

    def keyframe(self) -> None:
        pass


def _static_names() -> list[str]:
    """Names checked on the classes and modules, before any instance is built (all missing ones at once)."""
    missing = [f"RTCRtpSender.{n}" for n in (*REPLACED, "_send_rtcp") if not callable(getattr(RTCRtpSender, n, None))]
    missing += [f"aioice.CandidatePair.{n}" for n in ("remote_addr",) if not hasattr(aioice.ice.CandidatePair, n)]
    for name, func, params in (
        ("get_host_addresses", aioice_host_addresses, 2),
        ("validate_remote_candidate", _aioice_validate, 2),
    ):
        if len(inspect.signature(func).parameters) != params:
            missing.append(f"aioice.ice.{name}({params} parameters)")
        used = any(name in getattr(getattr(f, "__code__", None), "co_names", ())
                   for f in vars(aioice.ice.Connection).values())  # fmt: skip
        if not used:
            missing.append(f"aioice Connection's call of aioice.ice.{name}")
    return missing


async def _probe_candidates() -> None:
    """A refused remote candidate is never added; an accepted one is, and its pair reads its address."""
    connection = aioice.Connection(ice_controlling=True)
    candidate = aioice.Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
    with filter_remote_candidates(lambda address, transport: "probe"):
        await connection.add_remote_candidate(candidate)
    if connection.remote_candidates:
        raise _missing("aioice pairs remote candidates without aioice.ice.validate_remote_candidate")
    await connection.add_remote_candidate(candidate)
    pair = aioice.ice.CandidatePair(SimpleNamespace(), connection.remote_candidates[0])  # type: ignore[arg-type]
    if pair.remote_addr != ("127.0.0.1", 9):
        raise _missing(f"aioice CandidatePair.remote_addr reads {pair.remote_addr}")
    await connection.close()


def _params() -> RTCRtpSendParameters:
    return RTCRtpSendParameters(
        codecs=[
            RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102),
            RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=103, parameters={"apt": 102}),
        ],
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=4, uri=MID_URI),
            RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME_URI),
        ],
        muxId="m0",
        rtcp=RTCRtcpParameters(cname="probe", mux=True),
    )


async def _probe_sender() -> None:
    """A sender on dummy transports, taken over, started and stopped: its wire reads what was negotiated."""
    qa: asyncio.Queue[bytes | None] = asyncio.Queue()
    qb: asyncio.Queue[bytes | None] = asyncio.Queue()
    ice_a, ice_b = _DummyIce(qa, qb, "controlling"), _DummyIce(qb, qa, "controlled")
    # the server's side uses a shared certificate (its cached OpenSSL context), as egress does
    dtls_a = RTCDtlsTransport(ice_a, [SharedCertificate.generateCertificate()])  # type: ignore[arg-type]
    dtls_b = RTCDtlsTransport(ice_b, [RTCCertificate.generateCertificate()])  # type: ignore[arg-type]
    await asyncio.wait_for(
        asyncio.gather(dtls_b.start(dtls_a.getLocalParameters()), dtls_a.start(dtls_b.getLocalParameters())), 5
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    remote = aioice.Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
    await ice_a._connection.add_remote_candidate(remote)
    protocol = SimpleNamespace(transport=SimpleNamespace(get_extra_info=lambda key: sock))
    nominated = _get(ice_a._connection, "_nominated", "aioice Connection._nominated")
    nominated[1] = aioice.ice.CandidatePair(protocol, ice_a._connection.remote_candidates[0])  # type: ignore[arg-type]
    try:
        sender = RTCRtpSender("video", dtls_a)
        loops = _ProbeLoops()
        take_over(sender, loops)
        params = _params()
        await sender.send(params)
        try:
            await asyncio.wait_for(loops.sending.wait(), 2)
        except TimeoutError:
            raise _missing("RTCRtpSender.send() did not start the taken-over RTP loop") from None
        got = wire(sender, params.codecs[0])  # as the RTP loop read it, but raising here names what is missing
        want = (sender._ssrc, 102, sender._rtx_ssrc, 103, b"m0", 4, 3, "probe", Peer(sock.fileno(), "127.0.0.1", 9))
        read: tuple[object, ...] = (got.ssrc, got.payload_type, got.rtx_ssrc, got.rtx_payload_type, got.mid)
        read += (got.mid_id, got.abs_send_time_id, got.cname, got.peer)
        if read != want:
            raise _missing(f"a sender's wire reads {read}, expected {want}")
        if got.srtp_ctx == 0 or not isinstance(got.srtp_session, Session):
            raise _missing(f"RTCDtlsTransport._tx_srtp is {got.srtp_session!r}, not a pylibsrtp Session")
        try:
            await asyncio.wait_for(sender.stop(), 2)
        except TimeoutError:
            raise _missing("RTCRtpSender.stop() hangs after take_over: its started/exited events moved") from None
    finally:
        sock.close()
        await dtls_a.stop()
        await dtls_b.stop()
        await ice_a.stop()
        await ice_b.stop()
        await ice_a._connection.close()
        await ice_b._connection.close()


def _check_certificate() -> None:
    """A connection made under use_certificate holds that certificate, and one made outside it its own."""
    shared = SharedCertificate.generateCertificate()
    with use_certificate(shared):
        pc = aiortc.RTCPeerConnection()
    if certificates(pc) != [shared] or certificates(aiortc.RTCPeerConnection())[0] is shared:
        raise _missing("RTCPeerConnection no longer takes its certificate from RTCCertificate.generateCertificate()")
    transport = SimpleNamespace(state="new")
    with send_only():
        quiet = aiortc.RTCRtpReceiver("video", transport)  # type: ignore[arg-type]
    loud = aiortc.RTCRtpReceiver("video", transport)  # type: ignore[arg-type]
    if _estimator_of(quiet) is not None or _estimator_of(loud) is None:
        raise _missing("RTCRtpReceiver no longer builds its estimator from rtcrtpreceiver.RemoteBitrateEstimator")


def check() -> None:
    """Raise SeamError unless every private name this module uses is there and means what it meant."""
    missing = _static_names()
    if missing:
        raise _missing("missing " + ", ".join(missing))
    _check_certificate()
    failure: list[BaseException] = []

    async def probe() -> None:
        await _probe_candidates()
        await _probe_sender()

    def run() -> None:
        try:
            asyncio.run(probe())
        except BaseException as exc:
            failure.append(exc)

    # its own thread and event loop: importing this from inside a running loop, or before any, is the same
    thread = threading.Thread(target=run, name="rtc-seam-check")
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, SeamError):
            raise exc
        raise _missing(f"the aiortc sender probe failed: {exc!r}") from exc


check()
