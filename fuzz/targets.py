"""Fuzz targets: what a hostile or broken camera can send, through the C parsers that meet it first.

Each target takes one input (bytes), decodes it into a structured stream (so short inputs reach deep states, such as
thousands of parameter sets in one access unit) and checks, besides "no crash":
- no exception outside the documented ones (the depacketisers and RtpReceiver.parse raise nothing for bytes;
  the demuxer raises FramingError, after which the connection is restarted);
- bounded memory: stored parameter sets within their caps, a unit within max_au_size (plus the stored sets a
  keyframe gets), the demuxer's buffer within one pending frame or message;
- RTP parsing agrees with an independent reading of RFC 3550 §5.1.
A failed check raises AssertionError (a finding); fuzz/run.py and tests/core_ext/test_fuzz_short.py drive these.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from core_ext import depacketize
from core_ext.depacketize import AccessUnit, H264Depacketizer, H265Depacketizer
from core_ext.framing import FramingError, InterleavedDemuxer
from core_ext.rtp import RtpReceiver

# The bounds promised by core_ext.depacketize (read with a default so this harness also runs against a build from
# before they existed, and reports the unbounded store there).
PS_MAX_BYTES: int = getattr(depacketize, "MAX_PARAMETER_SET_BYTES", 64 * 1024)
PS_MAX_PER_KIND: int = getattr(depacketize, "MAX_PARAMETER_SETS_PER_KIND", 32)
AU_CAPS = (4 * 1024 * 1024, 64 * 1024, 2048, 300)
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "core_ext" / "fixtures"


class Reader:
    """Consumes an input as small integers and byte strings; past its end every read gives zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def __bool__(self) -> bool:
        return self.pos < len(self.data)

    def u8(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


# -- depacketisers ---------------------------------------------------------------------------------------------------


class RtpStream:
    """Numbers packets like a sender; the input moves its sequence and timestamp."""

    def __init__(self) -> None:
        self.seq = 0
        self.ts = 0

    def packet(self, payload: bytes, marker: bool = False) -> bytes:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, self.seq, self.ts, 0x11223344)
        self.seq = (self.seq + 1) & 0xFFFF
        return header + payload


def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def _parameter_set(h265: bool, kind: int, ps_id: int, size: int, tag: int) -> bytes:
    """A VPS/SPS/PPS (kind 0/1/2) carrying `ps_id` where the codec puts it, `size` bytes, distinct by `tag`."""
    if h265:
        header = bytes([(32 + kind) << 1, 1])
        bits = format(ps_id & 15, "04b") if kind == 0 else ""
        if kind == 1:
            bits = "0000" + "000" + "1" + "0" * 96 + _ue(ps_id & 15)  # vps id, one layer, profile_tier_level
        elif kind == 2:
            bits = _ue(ps_id & 63)
    else:
        header = bytes([0x67 if kind <= 1 else 0x68])
        bits = "01000010" + "0" * 16 + _ue(ps_id & 31) if kind <= 1 else _ue(ps_id & 255)
    bits += "1" + "0" * (-(len(bits) + 1) % 8)
    body = int(bits, 2).to_bytes(len(bits) // 8, "big")
    pad = max(0, size - len(header) - len(body) - 4)
    return header + body + bytes(pad) + tag.to_bytes(4, "big")


def _aggregate(h265: bool, nals: list[bytes]) -> bytes:
    head = bytes([48 << 1, 1]) if h265 else b"\x18"
    return head + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def _fragments(h265: bool, nal: bytes, size: int) -> list[bytes]:
    hlen = 2 if h265 else 1
    body = nal[hlen:] or b"\x00"
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    out = []
    for i, chunk in enumerate(chunks):
        flags = (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
        if h265:
            t = (nal[0] >> 1) & 0x3F
            out.append(bytes([(nal[0] & 0x81) | (49 << 1), nal[1] if len(nal) > 1 else 1, flags | t]) + chunk)
        else:
            out.append(bytes([(nal[0] & 0xE0) | 28, flags | (nal[0] & 0x1F)]) + chunk)
    return out


def depacketizer_packets(data: bytes, h265: bool) -> tuple[int, list[bytes]]:
    """(max_au_size, packets) an input stands for: a first byte of settings, then operations."""
    r = Reader(data)
    max_au_size = AU_CAPS[r.u8() & 3]
    s = RtpStream()
    packets: list[bytes] = []
    slice_ = bytes([19 << 1, 1]) + bytes(20) if h265 else b"\x65" + bytes(20)  # an IDR slice
    while r and len(packets) < 50_000:
        op = r.u8() % 8
        if op == 0:  # a packet as the input has it (the fixtures' real packets seed this)
            packets.append(r.take(r.u16() % 1600))
        elif op == 1:  # a payload under a header of ours
            flags = r.u8()
            s.ts = (s.ts + (3000 if flags & 2 else 0)) & 0xFFFFFFFF
            packets.append(s.packet(r.take(r.u16() % 1500), marker=bool(flags & 1)))
        elif op == 2:  # a burst of distinct parameter sets after a slice, singly or aggregated (issue 15)
            count, size, mode = r.u16() % 1024, 6 + r.u8() * 4, r.u8()
            nals = [_parameter_set(h265, (mode >> 1) % 3, i * (1 + (mode >> 4)), size, i) for i in range(count)]
            packets.append(s.packet(slice_))
            if mode & 1:
                batch = max(1, 1400 // (size + 2))
                packets += [s.packet(_aggregate(h265, nals[i : i + batch])) for i in range(0, len(nals), batch)]
            else:
                packets += [s.packet(n) for n in nals]
        elif op == 3:  # one NAL unit, fragmented
            nal = r.take(r.u16() % 8000)
            if len(nal) >= 2:
                packets += [s.packet(p) for p in _fragments(h265, nal, 1 + r.u8() * 6)]
        elif op == 4:  # the end of an access unit
            packets.append(s.packet(slice_, marker=True))
            s.ts = (s.ts + 3000) & 0xFFFFFFFF
        elif op == 5:  # loss, reordering, a restart of the sender's numbering
            s.seq = (s.seq + r.u16() - 0x100) & 0xFFFF
        elif op == 6:  # a large unit (the cap)
            size = r.u16() * 16
            packets += [s.packet(p) for p in _fragments(h265, slice_[: 2 if h265 else 1] + bytes(size), 1400)]
        else:  # an aggregate of small units from the input
            nals = [r.take(1 + r.u8() % 64) for _ in range(1 + r.u8() % 8)]
            packets.append(s.packet(_aggregate(h265, nals)))
    return max_au_size, packets


def check_depacketizer_state(dep: H264Depacketizer | H265Depacketizer) -> None:
    stored = len(dep.parameter_sets())
    assert stored <= PS_MAX_BYTES, f"{stored} bytes of parameter sets stored (cap {PS_MAX_BYTES})"
    count = getattr(dep, "parameter_set_count", None)
    if count is not None:
        assert count <= 3 * PS_MAX_PER_KIND, f"{count} parameter sets stored"
        assert dep.parameter_set_bytes == stored


def _depacketize(data: bytes, h265: bool) -> None:
    max_au_size, packets = depacketizer_packets(data, h265)
    dep = H265Depacketizer(max_au_size=max_au_size) if h265 else H264Depacketizer(max_au_size=max_au_size)
    for i, packet in enumerate(packets):
        for au in dep.push(packet):
            check_unit(au, max_au_size, "h265" if h265 else "h264")
        if i % 256 == 0:
            check_depacketizer_state(dep)
    for au in dep.flush():
        check_unit(au, max_au_size, "h265" if h265 else "h264")
    check_depacketizer_state(dep)
    assert dep.stats.packets == len(packets)


def check_unit(au: AccessUnit, max_au_size: int, codec: str) -> None:
    assert type(au) is AccessUnit and au.codec == codec
    assert au.data.startswith(b"\x00\x00\x00\x01"), au
    assert len(au.data) <= max_au_size + PS_MAX_BYTES, f"unit of {len(au.data)} bytes (cap {max_au_size})"


def h264_depacketize(data: bytes) -> None:
    _depacketize(data, False)


def h265_depacketize(data: bytes) -> None:
    _depacketize(data, True)


# -- RTP header parsing ----------------------------------------------------------------------------------------------


def reference_payload(packet: bytes) -> bytes | None:
    """RFC 3550 §5.1 read independently: the payload, or None if the header is malformed."""
    n = len(packet)
    if n < 12 or packet[0] >> 6 != 2:
        return None
    off = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if n < off + 4:
            return None
        off += 4 + 4 * int.from_bytes(packet[off + 2 : off + 4], "big")
    if off > n:
        return None
    end = n
    if packet[0] & 0x20:
        pad = packet[-1]
        if pad == 0 or pad > n - off:
            return None
        end = n - pad
    return packet[off:end]


def rtp_packets(data: bytes) -> Iterator[bytes]:
    """Packets from an input: mostly well-formed headers whose fields (CSRC count, extension, padding, sequence,
    timestamp) the input sets, some raw."""
    r = Reader(data)
    while r:
        op = r.u8()
        if op & 0x80:
            yield r.take(r.u8())
            continue
        b0 = 0x80 | (op & 0x3F)  # version 2, padding/extension/CSRC count from the input
        header = bytes([b0, r.u8()]) + r.take(2) + r.take(4) + b"\x11\x22\x33\x44"
        body = r.take(4 * (op & 0x0F))
        if op & 0x10:
            words = r.u8() % 8
            body += b"\xbe\xde" + words.to_bytes(2, "big") + r.take(4 * words)
        body += r.take(r.u8())
        if op & 0x20:
            body += bytes([r.u8() % 32])
        yield header + body


def rtp_parse(data: bytes) -> None:
    rx = RtpReceiver(96 if data[:1] == b"\x01" else -1)
    newest: int | None = None
    count = 0
    for packet in rtp_packets(data):
        count += 1
        header = rx.parse(packet)
        expected = reference_payload(packet)
        if expected is None:
            assert header is None, f"malformed header accepted: {packet[:16].hex()}"
            continue
        if header is None:
            continue  # a duplicate, late packet or other payload type: dropped by design
        assert header.payload == expected, packet[:16].hex()
        assert header.seq == int.from_bytes(packet[2:4], "big")
        assert header.timestamp == int.from_bytes(packet[4:8], "big")
        assert header.ext_timestamp & 0xFFFFFFFF == header.timestamp
        if newest is not None:  # extended against the newest timestamp: a signed 32-bit step from it
            assert -(1 << 31) <= header.ext_timestamp - newest < 1 << 31, (newest, header.ext_timestamp)
        newest = header.ext_timestamp if newest is None else max(newest, header.ext_timestamp)
    assert rx.stats.packets == count


# -- the interleaved demuxer -----------------------------------------------------------------------------------------

RTSP_STARTS: tuple[bytes, ...] = (b"RTSP/", b"OPTIONS ", b"DESCRIBE ", b"ANNOUNCE ", b"SETUP ", b"PLAY ", b"PAUSE ")
RTSP_STARTS += (b"TEARDOWN ", b"GET_PARAMETER ", b"SET_PARAMETER ", b"REDIRECT ", b"RECORD ")


def framing(data: bytes) -> None:
    """A TCP byte stream (channel 0 video, 1 its RTCP), fed in chunks whose sizes the input's first bytes choose."""
    max_message = (1024, 4096, 64 * 1024)[data[0] % 3] if data else 64 * 1024
    demuxer = InterleavedDemuxer(max_message)
    dep = H265Depacketizer(96) if len(data) > 1 and data[1] & 1 else H264Depacketizer(96)
    demuxer.add_channel(0, dep)
    steps = [1 + b * 37 for b in data[2:10]] or [4096]
    pos, i = 10, 0
    while pos < len(data):
        chunk = data[pos : pos + steps[i % len(steps)]]
        pos += len(chunk)
        i += 1
        try:
            out = demuxer.feed(chunk if i % 2 else bytearray(chunk))
        except FramingError:
            return  # documented: the connection is restarted
        for item in out:
            if isinstance(item, AccessUnit):
                check_unit(item, dep.max_au_size, dep.codec)
            else:
                assert type(item) is bytes and item.startswith(RTSP_STARTS), item[:40]
                assert len(item) <= 2 * max_message
        assert demuxer.buffered <= max(2 * max_message, 4 + 0xFFFF), demuxer.buffered
    check_depacketizer_state(dep)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "h264": h264_depacketize,
    "h265": h265_depacketize,
    "rtp": rtp_parse,
    "framing": framing,
}


# -- seeds -----------------------------------------------------------------------------------------------------------


def fixture_packets(name: str) -> list[bytes]:
    """The RTP packets of channel 0 in a captured interleaved stream."""
    data = (FIXTURES / name).read_bytes()
    out, pos = [], 0
    while pos + 4 <= len(data):
        if data[pos] != 0x24:  # an RTSP message: skip to its blank line
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            pos = end + 4
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] == 0:
            out.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return out


def seeds(target: str) -> list[bytes]:
    """A starting corpus: the captured camera streams (tests/core_ext/fixtures) cut to each target's input form,
    plus one parameter-set burst."""
    h265 = target == "h265"
    names = ["h265.bin"] if h265 else ["h264_multislice.bin", "h264_sprop_only.bin"]
    out: list[bytes] = []
    if target in ("h264", "h265"):
        for name in names:
            packets = fixture_packets(name)
            for start in range(0, min(len(packets), 120), 40):
                out.append(b"\x00" + b"".join(b"\x00" + len(p).to_bytes(2, "big") + p for p in packets[start:][:40]))
        out.append(b"\x00\x02\x00\x40\x40\x00\x04")  # 64 PPS of 262 bytes after a slice, then the unit's end
    elif target == "rtp":
        for name in ("h264_multislice.bin", "h265.bin"):
            out.append(b"".join(b"\x80" + bytes([min(len(p), 255)]) + p[:255] for p in fixture_packets(name)[:60]))
        out.append(bytes([0x3F, 0xE0]) + bytes(80))
    else:
        for name in ("h264_multislice.bin", "h265.bin", "h264_sprop_only.bin"):
            data = (FIXTURES / name).read_bytes()
            flags = bytes([2, 1 if name.startswith("h265") else 0]) + bytes([200, 3, 77, 255, 1, 10, 40, 120])
            out.append(flags + data[:16384])
    return out
