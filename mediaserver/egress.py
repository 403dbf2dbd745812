"""WebRTC egress (aiortc): one RTCPeerConnection per viewer, H.264 passed through from the hub.

aiortc does ICE, DTLS, SDP and RTCP; the media itself is sent by fanout.py: each viewer's `ViewerFeed` opens it
on the present through the bridge (bridge.py) and answers its picture-loss requests (PLI/FIR) from the cache,
and once it is on plain passthrough the camera's shared fan-out sends to all such viewers in one C call.
Answers negotiate H.264 only and are sent after ICE gathering completed (no server-side trickle).

A viewer asks for a profile (transcode.py): `main` passes H.264 through, `low` is a shared transcode (or the
camera's sub-stream, when `substream_lookup` finds one live). Joins wait in a bounded queue, a few set up at a
time, and are refused with `Overloaded` when the worker's measured load says one more would hurt the viewers
it has or their turn does not come within the deadline (admission.py). All sessions of a worker share one DTLS
certificate (`Certificates`, renewed daily) instead of generating one each. Snapshots
(snapshot.py) are served from the same hubs. The remote candidates a viewer signals are capped and filtered
by network (viewer_networks.py). Errors are mediaserver/errors.py's: `BadOffer` only for what is wrong with
the offer itself; anything else escaping `offer()` is a bug and propagates (the caller logs it, answers 500).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.sdp import SessionDescription, candidate_from_sdp

from mediaserver.admission import AdmissionSettings, JoinQueue, LoadMonitor
from mediaserver.bridge import BridgePool, StartPolicy, ViewerFeed
from mediaserver.errors import BadOffer, NotYet, Overloaded, UnknownCamera, UnknownSession, Unsupported
from mediaserver.fanout import FanoutPool, FastSender
from mediaserver.hub import Hub
from mediaserver.rtc_seam import (
    SharedCertificate,
    aioice_host_addresses,
    filter_remote_candidates,
    send_only,
    use_certificate,
    use_ice_hosts,
)
from mediaserver.snapshot import NoPicture, SnapshotCache
from mediaserver.transcode import MAIN, Profile, UnknownProfile, get_profile
from mediaserver.viewer_networks import CandidateGuard, ViewerNetworks, default_for, own_addresses

log = logging.getLogger(__name__)

HubLookup = Callable[[str], Hub | None]
# the errors and use_ice_hosts are re-exported for the callers that import them from here
__all__ = ["BadOffer", "Egress", "NotYet", "Overloaded", "UnknownCamera", "UnknownSession", "Unsupported",
           "check_offer", "h264_capabilities", "use_ice_hosts"]  # fmt: skip
# aiortc's setRemoteDescription raises these for an offer it can't use (ICE credentials or rtcp-mux missing, no
# codec in common, ...); anything else it raises is not the offer's fault
OFFER_ERRORS = (ValueError, OperationError, InvalidAccessError)
OWN_ADDRESSES_TTL_S = 10.0
CERTIFICATE_LIFETIME_S = 24 * 3600.0  # aiortc's certificates are valid 30 days; a new one each day


# --- offer checks -------------------------------------------------------------------------------------
def h264_capabilities() -> list[Any]:
    return [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/h264"]


def check_offer(sdp: str) -> None:
    """Raise BadOffer with a reason a person can act on (also for what aiortc assumes without checking)."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # the parser of untrusted text: whatever it raises, the text is at fault
        raise BadOffer(f"unparsable SDP offer: {exc}") from exc
    video = [m for m in description.media if m.kind == "video"]
    if not video:
        raise BadOffer("the offer has no video m-line")
    if not any(c.mimeType.lower() == "video/h264" for m in video for c in m.rtp.codecs):
        raise BadOffer("the offer has no H.264 codec; this server sends H.264 only")
    if any(m.dtls is None or not m.dtls.fingerprints for m in description.media):
        raise BadOffer("every m-line needs a DTLS fingerprint and a=setup")


def udp_candidates(lines: list[str]) -> int:
    """How many of these SDP lines are UDP candidates (the transport is the third field)."""
    fields = (line.split() for line in lines if line.startswith("a=candidate:"))
    return sum(1 for f in fields if len(f) > 2 and f[2].lower() == "udp")


class Certificates:
    """The worker's DTLS certificate: one for all its sessions (generating one costs ~0.5 ms, its OpenSSL
    context ~0.7 ms more), renewed every `lifetime_s`; sessions keep the one they started with."""

    def __init__(self, lifetime_s: float = CERTIFICATE_LIFETIME_S) -> None:
        self.lifetime_s = lifetime_s
        self._current: tuple[float, SharedCertificate] | None = None

    def current(self) -> SharedCertificate:
        now = time.monotonic()
        if self._current is None or now - self._current[0] >= self.lifetime_s:
            self._current = (now, SharedCertificate.generateCertificate())
        return self._current[1]


# --- the viewer's track ---------------------------------------------------------------------------
class CameraTrack(MediaStreamTrack):
    """The video track a viewer's transceiver carries. aiortc never pulls frames from it: the session's
    `FastSender` (fanout.py) sends the camera's units itself."""

    kind = "video"

    async def recv(self) -> Any:
        raise MediaStreamError  # not reached: FastSender replaces the sender's RTP loop


def _ms(t: float | None, since: float | None) -> int | None:
    return None if t is None or since is None else round(1000 * (t - since))


@dataclass
class Session:
    id: str
    camera_id: str
    pc: RTCPeerConnection
    feed: ViewerFeed
    sender: FastSender
    candidates: CandidateGuard
    profile: Profile = MAIN
    created_at: float = field(default_factory=time.monotonic)

    @property
    def overflows(self) -> int:
        """Times this viewer fell behind: its queues overflowed or the kernel refused a send (buffer full)."""
        return self.feed.overflows + self.sender.stalls

    def stats(self) -> dict[str, Any]:
        feed = self.feed
        return {
            "id": self.id,
            "camera_id": self.camera_id,
            "profile": self.profile.name,
            "state": self.pc.connectionState,
            "age_s": round(time.monotonic() - self.created_at, 1),
            "frames_sent": self.sender.frames,
            "frames_bridged": feed.bridged,
            "keyframes_sent": feed.keyframes,  # those sent before the viewer joined the shared fan-out
            "shared_fanout": self.sender.group is not None,
            "overflows": self.overflows,
            # connected (the sender asked for media) -> first unit handed to it; and how old that picture was
            "first_picture_ms": _ms(feed.first_at, feed.active_at),
            "first_picture_age_ms": _ms(feed.first_age, 0.0),
        }  # fmt: skip


class Egress:
    """The WebRTC sessions of one worker.

    `substream_lookup(camera_id)` finds the hub of a camera's registered sub-stream, if the worker ingests
    one; profiles that prefer it (`low`) pass it through instead of transcoding the main stream.
    `viewer_networks`: where viewers' candidates may point (None: viewer_networks.default_for(ice_hosts))."""

    def __init__(
        self,
        hub_lookup: HubLookup,
        ice_hosts: list[str] | None = None,
        start: StartPolicy = "live",
        admission: AdmissionSettings | None = None,
        substream_lookup: HubLookup | None = None,
        viewer_networks: ViewerNetworks | None = None,
    ) -> None:
        self.hub_lookup = hub_lookup
        self.substream_lookup = substream_lookup
        self.ice_hosts = ice_hosts
        self.viewer_networks = viewer_networks if viewer_networks is not None else default_for(ice_hosts)
        self._own: tuple[float, frozenset[str]] = (-OWN_ADDRESSES_TTL_S, frozenset())
        self.start = start
        self.bridges = BridgePool()
        self.fanout = FanoutPool()
        self.snapshots = SnapshotCache()
        self.load = LoadMonitor(admission, self._overflows)
        self.joins = JoinQueue(self.load)
        self.certificates = Certificates()
        self._sessions: dict[str, Session] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._past_overflows = 0  # of sessions already closed

    def has_camera(self, camera_id: str) -> bool:
        return self.hub_lookup(camera_id) is not None

    def _overflows(self) -> int:
        return self._past_overflows + sum(s.overflows for s in self._sessions.values())

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """A join's turn in the queue (held while it is set up); raises Overloaded if refused."""
        self.load.start()  # measuring from the first offer on (the loop runs by then)
        try:
            async with self.joins.slot(lambda: len(self._sessions)):
                yield
        except Overloaded as exc:
            log.warning("refusing a viewer: %s %s", exc, exc.load)
            raise

    def own_addresses(self) -> frozenset[str]:
        """This server's addresses (viewers' candidates may not point at them), re-read every few seconds."""
        at, own = self._own
        if time.monotonic() - at >= OWN_ADDRESSES_TTL_S:
            own = own_addresses([*aioice_host_addresses(True, True), *(self.ice_hosts or ())])
            self._own = (time.monotonic(), own)
        return own

    def source(self, camera_id: str, profile: Profile) -> tuple[Hub, Profile]:
        """The hub to serve a profile from, and the profile to apply to it: a live sub-stream as it is
        (its own size and rate are what the profile wants), else the main stream through the profile."""
        hub = self.hub_lookup(camera_id)
        if hub is None:
            raise UnknownCamera(f"no camera {camera_id!r}")
        if profile.substream and self.substream_lookup is not None:
            sub = self.substream_lookup(camera_id)
            if sub is not None and sub.gop():
                return sub, MAIN
        return hub, profile

    async def offer(self, camera_id: str, sdp: str, profile: str | None = None) -> tuple[str, str]:
        """Answer a viewer's offer: (session id, answer SDP). Raises UnknownCamera, BadOffer, Overloaded."""
        check_offer(sdp)
        try:
            wanted = get_profile(profile)
        except UnknownProfile as exc:
            raise BadOffer(str(exc)) from None
        hub, applied = self.source(camera_id, wanted)
        async with self.admit():
            session = self._new_session(camera_id, hub, applied, wanted)
            try:
                answer = await self._answer(session, sdp)
            except BaseException:  # BadOffer, a bug, or cancelled: nothing of the session stays
                await session.pc.close()
                session.feed.close()
                raise
            self._sessions[session.id] = session
        session_id = session.id
        self._watch(session)
        log.info("session %s: camera %s (%s), %d sessions", session_id, camera_id, wanted.name, len(self._sessions))
        return session_id, answer

    def _new_session(self, camera_id: str, hub: Hub, applied: Profile, wanted: Profile) -> Session:
        session_id = uuid.uuid4().hex
        with use_certificate(self.certificates.current()):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: host candidates only
        feed = ViewerFeed(self.bridges, hub, self.start, applied)
        sender = self.fanout.sender(feed, lambda: self._close_soon(session_id))
        guard = CandidateGuard(self.viewer_networks, self.own_addresses())
        return Session(session_id, camera_id, pc, feed, sender, guard, wanted)

    async def _answer(self, session: Session, sdp: str) -> str:
        pc = session.pc
        # Codec choice happens inside setRemoteDescription: the transceiver and its H.264-only preference
        # must exist before it, or aiortc answers with whatever the offer lists first.
        with send_only():  # the transceivers' receivers never get media: no bitrate estimator to build
            transceiver: RTCRtpTransceiver = pc.addTransceiver(CameraTrack(), direction="sendonly")
        transceiver.setCodecPreferences(h264_capabilities())
        session.sender.attach(transceiver.sender)
        try:
            with filter_remote_candidates(session.candidates), send_only():
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except OFFER_ERRORS as exc:
            raise BadOffer(f"cannot answer the offer: {exc}") from exc
        with use_ice_hosts(self.ice_hosts):
            await pc.setLocalDescription(await pc.createAnswer())  # returns once gathering completed
        return pc.localDescription.sdp

    def _watch(self, session: Session) -> None:
        @session.pc.on("connectionstatechange")
        def on_state() -> None:
            state = session.pc.connectionState
            log.debug("session %s: %s", session.id, state)
            if state in ("failed", "closed"):
                self._close_soon(session.id)

    def _close_soon(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            task = asyncio.get_running_loop().create_task(self._shutdown(session))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def patch(self, session_id: str, fragment: str) -> None:
        """Trickle ICE from the viewer (application/trickle-ice-sdpfrag). Raises UnknownSession, BadOffer
        (also: more candidates than a session may have), Unsupported (ICE restart)."""
        session = self._get(session_id)
        remote = SessionDescription.parse(session.pc.remoteDescription.sdp)
        ufrag = remote.media[0].ice.usernameFragment if remote.media and remote.media[0].ice else None
        mid = remote.media[0].rtp.muxId if remote.media else None
        lines = [raw.strip() for raw in fragment.splitlines()]
        if not session.candidates.room(udp_candidates(lines)):
            raise BadOffer(f"too many ICE candidates: at most {session.candidates.limit} per session")
        with filter_remote_candidates(session.candidates):
            await self._trickle(session, lines, ufrag, mid)

    @staticmethod
    async def _trickle(session: Session, lines: list[str], ufrag: str | None, mid: str | None) -> None:
        for line in lines:
            if line.startswith("a=ice-ufrag:") and line.split(":", 1)[1] != ufrag:
                raise Unsupported("ICE restart is not supported: start a new session")
            if line.startswith("a=candidate:"):
                try:
                    candidate = candidate_from_sdp(line[len("a=candidate:") :])
                except Exception as exc:  # aiortc asserts on malformed lines
                    raise BadOffer(f"unparsable candidate: {line}") from exc
                # BUNDLE: all media share the first m-line's transport
                candidate.sdpMid, candidate.sdpMLineIndex = mid, 0
                await session.pc.addIceCandidate(candidate)
            elif line == "a=end-of-candidates":
                await session.pc.addIceCandidate(None)

    async def close(self, session_id: str) -> None:
        """End a session (DELETE). Raises UnknownSession."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise UnknownSession(f"no session {session_id!r}")
        await self._shutdown(session)

    async def _shutdown(self, session: Session) -> None:
        self._past_overflows += session.overflows
        await session.pc.close()  # stops the sender first: it leaves its fan-out group before the sockets close
        session.feed.close()
        log.info("session %s closed after %.1f s", session.id, time.monotonic() - session.created_at)

    async def close_camera(self, camera_id: str) -> None:
        """The camera was removed: end all its sessions."""
        for session in [s for s in self._sessions.values() if s.camera_id == camera_id]:
            await self.close(session.id)

    async def close_all(self) -> None:
        for session_id in list(self._sessions):
            session = self._sessions.pop(session_id, None)
            if session is not None:  # else its peer closed it meanwhile (_close_soon)
                await self._shutdown(session)
        if self._closing:
            await asyncio.gather(*self._closing)
        self.bridges.close()
        await self.load.stop()

    async def snapshot(self, camera_id: str, width: int | None = None) -> bytes:
        """The camera's newest picture as JPEG (cached briefly). Raises UnknownCamera, NotYet."""
        hub = self.hub_lookup(camera_id)
        if hub is None:
            raise UnknownCamera(f"no camera {camera_id!r}")
        try:
            return await self.snapshots.get(hub, width)
        except NoPicture as exc:
            raise NotYet(str(exc)) from None

    def _get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise UnknownSession(f"no session {session_id!r}") from None

    def session_camera(self, session_id: str) -> str | None:
        session = self._sessions.get(session_id)
        return None if session is None else session.camera_id

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return [s.stats() for s in self._sessions.values()]
