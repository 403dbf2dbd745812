"""Builders for synthetic RTP packets and H.264/H.265 payloads (test helper for tests/core_ext)."""

from __future__ import annotations

import struct

IDR = b"\x65" + bytes(range(1, 40))  # H.264 IDR slice
SLICE = b"\x41" + bytes(range(50, 80))  # H.264 non-IDR slice
SPS = b"\x67\x42\xc0\x1e\xd9"
PPS = b"\x68\xce\x3c\x80"
AUD = b"\x09\xf0"
SC = b"\x00\x00\x00\x01"

# H.265: 2-byte NAL headers (type << 1, layer 0, tid 1)
H5_VPS = b"\x40\x01\x0c\x01"
H5_SPS = b"\x42\x01\x01\x01"
H5_PPS = b"\x44\x01\xc1\x72"
H5_IDR = b"\x26\x01" + bytes(range(1, 60))  # IDR_W_RADL (19)
H5_CRA = b"\x2a\x01" + bytes(range(3, 30))  # CRA (21)
H5_TRAIL = b"\x02\x01" + bytes(range(7, 50))  # TRAIL_R (1)


def rtp(
    seq: int,
    ts: int,
    payload: bytes,
    *,
    marker: bool = False,
    pt: int = 96,
    ssrc: int = 0x11223344,
    csrc: tuple[int, ...] = (),
    ext: bytes | None = None,
    pad: int = 0,
    version: int = 2,
) -> bytes:
    """One RTP packet; `ext` is the extension body (a multiple of 4 bytes), `pad` the padding count."""
    b0 = version << 6 | (0x20 if pad else 0) | (0x10 if ext is not None else 0) | len(csrc)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrc)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if pad:
        out += bytes(pad - 1) + bytes([pad])
    return out


def annexb(*nals: bytes) -> bytes:
    return b"".join(SC + n for n in nals)


def stap_a(*nals: bytes) -> bytes:
    return b"\x18" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal: bytes, size: int) -> list[bytes]:
    """Split one H.264 NAL into FU-A payloads carrying `size` bytes each."""
    body = nal[1:]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    out = []
    for i, chunk in enumerate(chunks):
        header = (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0) | (nal[0] & 0x1F)
        out.append(bytes([(nal[0] & 0xE0) | 28, header]) + chunk)
    return out


def ap_h265(*nals: bytes) -> bytes:
    return bytes([48 << 1, 1]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_h265(nal: bytes, size: int) -> list[bytes]:
    """Split one H.265 NAL into FU payloads (RFC 7798 §4.4.3)."""
    body = nal[2:]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    nal_type = (nal[0] >> 1) & 0x3F
    out = []
    for i, chunk in enumerate(chunks):
        header = (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0) | nal_type
        out.append(bytes([(nal[0] & 0x81) | (49 << 1), nal[1], header]) + chunk)
    return out


class Stream:
    """Numbers packets like a sender: consecutive sequence numbers from `seq`."""

    def __init__(self, seq: int = 1000, pt: int = 96) -> None:
        self.seq = seq
        self.pt = pt

    def packet(self, ts: int, payload: bytes, marker: bool = False, **kw: object) -> bytes:
        pkt = rtp(self.seq, ts, payload, marker=marker, pt=self.pt, **kw)  # type: ignore[arg-type]
        self.seq = (self.seq + 1) & 0xFFFF
        return pkt

    def au(self, ts: int, payloads: list[bytes]) -> list[bytes]:
        """Packets of one access unit, marker on the last."""
        return [self.packet(ts, p, marker=i == len(payloads) - 1) for i, p in enumerate(payloads)]


def frame(channel: int, payload: bytes) -> bytes:
    """RTSP interleaved frame."""
    return b"$" + struct.pack("!BH", channel, len(payload)) + payload
