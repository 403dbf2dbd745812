"""RTP header parsing, loss accounting and timestamp extension (core_ext.rtp)."""

from __future__ import annotations

import pytest
from helpers.rtp_synth import rtp

from core_ext.rtp import RtpReceiver


def test_fixed_header_fields() -> None:
    r = RtpReceiver()
    h = r.parse(rtp(7, 123456, b"\x41abc", marker=True, pt=97, ssrc=0xDEADBEEF))
    assert h is not None
    assert (h.seq, h.timestamp, h.ext_timestamp, h.payload_type, h.marker, h.ssrc) == (
        7,
        123456,
        123456,
        97,
        True,
        0xDEADBEEF,
    )
    assert h.payload == b"\x41abc" and not h.gap
    assert r.stats.packets == 1 and r.stats.bytes == 16


def test_csrc_extension_and_padding_are_skipped() -> None:
    r = RtpReceiver()
    h = r.parse(rtp(1, 0, b"\x41payload", csrc=(1, 2, 3), ext=b"\x01\x02\x03\x04" * 2, pad=5))
    assert h is not None and h.payload == b"\x41payload"


@pytest.mark.parametrize(
    ("packet", "counter"),
    [
        (rtp(1, 0, b"\x41x", version=1), "bad_version"),
        (rtp(1, 0, b"\x41x", version=3), "bad_version"),
        (rtp(1, 0, b"\x41x")[:11], "truncated"),
        (b"", "truncated"),
        (rtp(1, 0, b"", csrc=(1, 2, 3))[:20], "truncated"),  # CSRC list cut short
        (rtp(1, 0, b"", ext=b"\x00" * 8)[:18], "truncated"),  # extension cut short
        (bytes([0xA0]) + rtp(1, 0, b"\x41x\x09")[1:], "bad_padding"),  # pad 9 > payload 3
        (bytes([0xA0]) + rtp(1, 0, b"\x41x\x00")[1:], "bad_padding"),  # pad count 0
    ],
)
def test_malformed_headers_are_counted(packet: bytes, counter: str) -> None:
    r = RtpReceiver()
    assert r.parse(packet) is None
    assert getattr(r.stats, counter) == 1


def test_padding_equal_to_payload_is_allowed() -> None:
    h = RtpReceiver().parse(bytes([0xA0]) + rtp(1, 0, b"\x00\x00\x03")[1:])
    assert h is not None and h.payload == b""


def test_payload_type_filter() -> None:
    r = RtpReceiver(payload_type=96)
    assert r.parse(rtp(1, 0, b"\x41", pt=97)) is None
    assert r.stats.bad_payload_type == 1
    assert r.parse(rtp(2, 0, b"\x41", pt=96)) is not None


def test_sequence_gap_counts_loss() -> None:
    r = RtpReceiver()
    assert r.parse(rtp(10, 0, b"x")) is not None
    h = r.parse(rtp(13, 0, b"x"))
    assert h is not None and h.gap
    assert r.stats.lost == 2


def test_sequence_wrap_is_not_loss() -> None:
    r = RtpReceiver()
    for seq in (65534, 65535, 0, 1):
        h = r.parse(rtp(seq, 0, b"x"))
        assert h is not None and not h.gap
    assert r.stats.lost == 0
    h = r.parse(rtp(3, 0, b"x"))
    assert h is not None and h.gap and r.stats.lost == 1


def test_duplicates_and_late_packets_are_dropped_not_loss() -> None:
    r = RtpReceiver()
    for seq in (100, 101, 103):
        r.parse(rtp(seq, 0, b"x"))
    assert r.stats.lost == 1
    assert r.parse(rtp(103, 0, b"x")) is None  # duplicate
    assert r.parse(rtp(102, 0, b"x")) is None  # late: no longer lost
    assert (r.stats.duplicates, r.stats.reordered, r.stats.lost) == (1, 1, 0)
    assert r.parse(rtp(104, 0, b"x")) is not None


def test_sequence_jump_is_a_resync_not_huge_loss() -> None:
    r = RtpReceiver()
    r.parse(rtp(100, 0, b"x"))
    h = r.parse(rtp(30000, 0, b"x"))
    assert h is not None and h.gap
    assert (r.stats.lost, r.stats.resyncs) == (0, 1)
    assert r.parse(rtp(30001, 0, b"x")) is not None and r.stats.lost == 0


def test_timestamp_extends_across_wrap() -> None:
    r = RtpReceiver()
    stamps = [0xFFFF_F000, 0xFFFF_FF00, 0x0000_0100, 0x0001_0000]
    ext = [h.ext_timestamp for i, ts in enumerate(stamps) if (h := r.parse(rtp(i, ts, b"x"))) is not None]
    assert ext == [0xFFFF_F000, 0xFFFF_FF00, 0x1_0000_0100, 0x1_0001_0000]


def test_timestamp_going_back_stays_near() -> None:
    """B-frames: an earlier timestamp maps just below, and does not move the reference."""
    r = RtpReceiver()
    out = []
    for i, ts in enumerate([0xFFFF_FF00, 0x100, 0xFFFF_FFF0, 0x200]):
        h = r.parse(rtp(i, ts, b"x"))
        assert h is not None
        out.append(h.ext_timestamp)
    assert out == [0xFFFF_FF00, 0x1_0000_0100, 0xFFFF_FFF0, 0x1_0000_0200]


def test_stats_are_readonly() -> None:
    r = RtpReceiver()
    with pytest.raises(AttributeError):
        r.stats.lost = 5  # type: ignore[misc]
    assert r.stats.as_dict()["packets"] == 0
