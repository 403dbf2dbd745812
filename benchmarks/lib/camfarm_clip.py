"""The camera farm's media: one pre-encoded clip, demuxed and RTP-packetised once at start-up.

Packetisation follows RFC 6184 (H.264: single NAL unit packets, FU-A) and RFC 7798 (H.265: single NAL unit
packets, FU), which is what `core_ext.depacketize` and every real RTSP client accept. The result is a list of
per-frame templates whose RTP headers carry placeholders: per camera only sequence number, timestamp and SSRC
are written in (see camfarm.py), so the per-frame cost of a camera is a copy, a few `pack_into` and one write.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import av

PAYLOAD_TYPE = 96
MAX_PAYLOAD = 1400  # fits a 1500-byte MTU with IP/UDP/RTP headers
RTP_FIELDS = struct.Struct("!HII")  # sequence number, timestamp, SSRC: bytes 2..12 of the RTP header


@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit ready to send. `tcp` is every packet already `$`-framed for channel 0, back to back;
    `tcp_offsets` are the offsets of their RTP headers in it. `udp` holds the same packets unframed."""

    tcp: bytes
    tcp_offsets: tuple[int, ...]
    udp: tuple[bytes, ...]
    keyframe: bool


@dataclass(frozen=True, slots=True)
class Clip:
    codec: str  # "h264" | "h265"
    fps: int
    width: int
    height: int
    parameter_sets: tuple[bytes, ...]  # H.264: SPS, PPS; H.265: VPS, SPS, PPS (NAL units, no start codes)
    frames: tuple[Frame, ...]  # starts with a keyframe

    @property
    def bitrate(self) -> float:
        """Bits per second on the wire (RTP payloads and headers) at the clip's frame rate."""
        return sum(len(b) for f in self.frames for b in f.udp) * 8 * self.fps / len(self.frames)

    def sdp_fmtp(self) -> str:
        from base64 import b64encode

        b64 = [b64encode(n).decode() for n in self.parameter_sets]
        if self.codec == "h264":
            profile = self.parameter_sets[0][1:4].hex()
            return f"packetization-mode=1;profile-level-id={profile};sprop-parameter-sets={','.join(b64)}"
        return f"sprop-vps={b64[0]};sprop-sps={b64[1]};sprop-pps={b64[2]}"


def nal_type(codec: str, nal: bytes) -> int:
    return nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F


def packetize_nal(codec: str, nal: bytes, mtu: int = MAX_PAYLOAD) -> list[bytes]:
    """RTP payloads for one NAL unit: the NAL itself if it fits, else fragmentation units."""
    if len(nal) <= mtu:
        return [nal]
    kind = nal_type(codec, nal)
    if codec == "h264":  # FU indicator keeps F and NRI, type 28 (FU-A)
        indicator, body = bytes([(nal[0] & 0xE0) | 28]), nal[1:]
    else:  # PayloadHdr type 49 (FU) keeps F, LayerId and TID
        indicator, body = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]]), nal[2:]
    step = mtu - len(indicator) - 1
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    last = len(chunks) - 1
    return [
        indicator + bytes([kind | (0x80 if k == 0 else 0) | (0x40 if k == last else 0)]) + chunk
        for k, chunk in enumerate(chunks)
    ]


def rtp_packets(payloads: list[bytes]) -> list[bytes]:
    """RTP packets with zeroed seq/timestamp/SSRC; the marker bit on the last packet of the access unit."""
    last = len(payloads) - 1
    return [bytes([0x80, PAYLOAD_TYPE | (0x80 if k == last else 0)]) + bytes(10) + p for k, p in enumerate(payloads)]


def make_frame(codec: str, nals: list[bytes], keyframe: bool) -> Frame:
    packets = rtp_packets([p for nal in nals for p in packetize_nal(codec, nal)])
    tcp, offsets = bytearray(), []
    for packet in packets:
        tcp += struct.pack("!cBH", b"$", 0, len(packet))
        offsets.append(len(tcp))
        tcp += packet
    return Frame(bytes(tcp), tuple(offsets), tuple(packets), keyframe)


def _length_prefixed(data: bytes, size: int = 4) -> list[bytes]:
    nals, i = [], 0
    while i + size <= len(data):
        n = int.from_bytes(data[i : i + size], "big")
        nals.append(data[i + size : i + size + n])
        i += size + n
    return nals


def parameter_sets(codec: str, extradata: bytes) -> tuple[list[bytes], int]:
    """(parameter set NALs, NAL length size) from an MP4 avcC / hvcC box."""
    out: list[bytes] = []
    if codec == "h264":
        length_size = (extradata[4] & 3) + 1
        i, count = 6, extradata[5] & 0x1F
        for _ in range(count):
            n = int.from_bytes(extradata[i : i + 2], "big")
            out.append(extradata[i + 2 : i + 2 + n])
            i += 2 + n
        count, i = extradata[i], i + 1
        for _ in range(count):
            n = int.from_bytes(extradata[i : i + 2], "big")
            out.append(extradata[i + 2 : i + 2 + n])
            i += 2 + n
        return out, length_size
    length_size = (extradata[21] & 3) + 1
    i, arrays = 23, extradata[22]
    for _ in range(arrays):
        i += 1  # array_completeness + NAL type
        count, i = int.from_bytes(extradata[i : i + 2], "big"), i + 2
        for _ in range(count):
            n = int.from_bytes(extradata[i : i + 2], "big")
            out.append(extradata[i + 2 : i + 2 + n])
            i += 2 + n
    return out, length_size


def load_clip(path: str | Path) -> Clip:
    """Demux an MP4 (H.264/H.265, no B-frames) and packetise every frame. Keyframes carry the parameter
    sets in-band as well as in the SDP, as most cameras do, so clients that ignore sprop still decode."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = "h265" if stream.codec_context.name == "hevc" else "h264"
        fps = round(float(stream.average_rate or 25))
        width, height = stream.codec_context.width, stream.codec_context.height
        sets, length_size = parameter_sets(codec, bytes(stream.codec_context.extradata or b""))
        frames = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            nals = [n for n in _length_prefixed(bytes(packet), length_size) if n]
            keyframe = bool(packet.is_keyframe)
            if keyframe:
                ps_types = {7, 8} if codec == "h264" else {32, 33, 34}
                nals = sets + [n for n in nals if nal_type(codec, n) not in ps_types]
            frames.append(make_frame(codec, nals, keyframe))
    if not frames or not frames[0].keyframe:
        raise ValueError(f"{path}: clip must start with a keyframe")
    return Clip(codec, fps, width, height, tuple(sets), tuple(frames))
