"""A real WebRTC viewer for egress tests: aiortc, recvonly H.264 over loopback."""

from __future__ import annotations

import asyncio
import time

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from mediaserver.egress import Egress, use_ice_hosts


class Viewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.pc.on("track", self.track.set_result)

    async def offer(self) -> str:
        with use_ice_hosts(["127.0.0.1"]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def join(self, egress: Egress, camera: str) -> str:
        """Offer straight to an Egress (no HTTP); the session id."""
        session_id, answer = await egress.offer(camera, await self.offer())
        await self.answer(answer)
        return session_id


class DecodingViewer(Viewer):
    """A real WebRTC viewer (aiortc: ICE, DTLS-SRTP, depacketising, decoding) noting when each frame decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[float] = []  # monotonic time of each decoded frame
        self._task: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)

    @property
    def decoded(self) -> int:
        return len(self.frames)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            await track.recv()
            self.frames.append(time.monotonic())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()
