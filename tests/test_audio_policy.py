"""Audio is never pulled from a camera nor sent to a viewer (ARCHITECTURE.md, "Audio"): a camera with a G.711 track
is ingested video-only, and a viewer that offers to receive audio gets an inactive audio m-line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from helpers.feed import rtsp_camera
from helpers.peers import simcam

from mediaserver.egress import Egress, use_ice_hosts


def stream_kinds(url: str) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_type,codec_name",
         "-of", "csv=p=0", url],
        check=True, capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    return sorted(line.strip() for line in out.stdout.splitlines() if line.strip())


def media_sections(sdp: str) -> dict[str, str]:
    """kind -> its m-section text."""
    sections = sdp.split("\nm=")[1:]
    return {s.split(" ", 1)[0]: s for s in sections}


async def test_a_camera_with_audio_is_ingested_and_served_video_only(h264_clip: Path) -> None:
    with simcam({"mic": h264_clip}, audio=True) as cam:
        url = cam.url("mic")
        assert stream_kinds(url) == ["h264,video", "pcm_mulaw,audio"]  # the camera really offers audio
        async with rtsp_camera("mic", url) as hub:
            assert hub.gop() and hub.codec == "h264"
            egress = Egress({"mic": hub}.get, ice_hosts=["127.0.0.1"])
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            try:
                pc.addTransceiver("audio", direction="recvonly")
                pc.addTransceiver("video", direction="recvonly")
                with use_ice_hosts(["127.0.0.1"]):
                    await pc.setLocalDescription(await pc.createOffer())
                _, answer = await egress.offer("mic", pc.localDescription.sdp)
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                sections = media_sections(answer)
                assert "a=inactive" in sections["audio"]  # nothing is ever sent on it
                assert "a=sendonly" in sections["video"] and "H264/90000" in sections["video"]
            finally:
                await pc.close()
                await egress.close_all()
