"""RTSP interleaved framing (core_ext.framing), from synthetic streams."""

from __future__ import annotations

import random

import pytest
from helpers.rtp_synth import IDR, PPS, SLICE, SPS, Stream, annexb, frame, fu_a, stap_a

from core_ext.depacketize import AccessUnit, H264Depacketizer
from core_ext.framing import FramingError, InterleavedDemuxer
from core_ext.gop import GopCache

PLAY_OK = b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 1234\r\n\r\n"
SDP_BODY = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n"
DESCRIBE_OK = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\ncontent-length: %d\r\n\r\n%s" % (len(SDP_BODY), SDP_BODY)
SERVER_PING = b"GET_PARAMETER rtsp://127.0.0.1/cam RTSP/1.0\r\nCSeq: 9\r\n\r\n"


def demuxer(**kw: int) -> tuple[InterleavedDemuxer, H264Depacketizer]:
    d = H264Depacketizer(96)
    m = InterleavedDemuxer(**kw)
    m.add_channel(0, d)
    return m, d


def sample_stream() -> bytes:
    s = Stream()
    key = s.au(0, [stap_a(SPS, PPS), *fu_a(IDR * 30, 200)])
    delta = s.au(3600, [SLICE, SLICE])
    return (
        PLAY_OK
        + b"".join(frame(0, p) for p in key)
        + frame(1, b"\x80\xc8" + bytes(26))  # RTCP sender report
        + DESCRIBE_OK
        + SERVER_PING
        + b"".join(frame(0, p) for p in delta)
    )


def describe(items: list[bytes | AccessUnit]) -> list[object]:
    return [i if isinstance(i, bytes) else (i.pts, i.keyframe, i.data) for i in items]


def test_messages_and_units_in_stream_order() -> None:
    m, _ = demuxer()
    out = m.feed(sample_stream())
    assert describe(out) == [
        PLAY_OK,
        (0, True, annexb(SPS, PPS, IDR * 30)),
        DESCRIBE_OK,
        SERVER_PING,
        (3600, False, annexb(SLICE, SLICE)),
    ]
    assert (m.rtcp_frames, m.unknown_channel_frames, m.messages, m.buffered) == (1, 0, 3, 0)
    assert m.consumed == len(sample_stream())


def test_an_unwatched_cameras_units_go_to_its_cache_messages_never() -> None:
    """With the hub's cache as the only consumer, units continuing a cached GOP (keyframes with their parameter
    sets too) stay in C; RTSP messages always reach Python; and the session's first keyframe goes to Python, with
    every unit after it in the same read, so the cache sees units in order."""
    m, _ = demuxer()
    cache = GopCache(1 << 20, 100)
    cache.direct = True
    m.cache = cache
    s = Stream()

    def units(*aus: tuple[int, list[bytes]]) -> bytes:
        return b"".join(frame(0, p) for ts, nals in aus for p in s.au(ts, nals))

    key = [stap_a(SPS, PPS), *fu_a(IDR * 30, 200)]
    out = m.feed(PLAY_OK + units((0, key), (3600, [SLICE])))
    assert describe(out) == [PLAY_OK, (0, True, annexb(SPS, PPS, IDR * 30)), (3600, False, annexb(SLICE))]
    for item in out[1:]:  # what Hub.publish does with them
        cache.add(item, 0.0)
    out = m.feed(units((7200, [SLICE])) + SERVER_PING + units((10800, key), (14400, [SLICE])))
    assert out == [SERVER_PING]
    assert [u.pts for u in cache.snapshot()] == [10800, 14400] and (cache.units, cache.keyframes) == (5, 2)
    cache.direct = False  # a viewer came
    assert describe(m.feed(units((18000, [SLICE])))) == [(18000, False, annexb(SLICE))] and len(cache) == 2


@pytest.mark.parametrize("seed", range(20))
def test_any_chunking_gives_the_same_result(seed: int) -> None:
    data = sample_stream()
    expected = describe(demuxer()[0].feed(data))
    rng = random.Random(seed)
    m, _ = demuxer()
    out: list[bytes | AccessUnit] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 5, rng.randrange(1, 400)])
        chunk = data[pos : pos + step]
        out += m.feed(rng.choice([bytes, bytearray, memoryview])(chunk))
        pos += step
    assert describe(out) == expected and m.buffered == 0


def test_truncated_frame_waits_for_more() -> None:
    m, _ = demuxer()
    packet = frame(0, Stream().packet(0, SLICE, marker=True))
    assert m.feed(packet[:3]) == [] and m.buffered == 3
    assert m.feed(packet[3:-1]) == []
    [au] = m.feed(packet[-1:])
    assert isinstance(au, AccessUnit) and m.buffered == 0


def test_message_body_waits_for_content_length() -> None:
    m, _ = demuxer()
    assert m.feed(DESCRIBE_OK[:-5]) == []
    assert m.feed(DESCRIBE_OK[-5:]) == [DESCRIBE_OK]


def test_unregistered_channels_are_counted_and_dropped() -> None:
    m, _ = demuxer()
    assert m.feed(frame(1, b"rtcp") + frame(3, b"rtcp?") + frame(4, b"video?")) == []
    assert (m.rtcp_frames, m.unknown_channel_frames, m.frames) == (1, 2, 3)


def test_two_channels_have_independent_depacketizers() -> None:
    m, d0 = demuxer()
    d2 = H264Depacketizer()
    m.add_channel(2, d2)
    out = m.feed(frame(2, Stream(seq=5).packet(90, SLICE, marker=True)) + frame(0, Stream().packet(0, IDR)))
    assert [au.pts for au in out if isinstance(au, AccessUnit)] == [90]
    assert (d0.stats.packets, d2.stats.packets) == (1, 1)


def test_empty_and_bad_rtp_inside_frames_is_counted() -> None:
    m, d = demuxer()
    assert m.feed(frame(0, b"") + frame(0, b"\x40" + bytes(20))) == []
    assert (d.stats.truncated, d.stats.bad_version) == (1, 1)


@pytest.mark.parametrize("garbage", [b"\x00", b"HTTP/1.1 200 OK\r\n\r\n", b"RTX", b"play rtsp://x RTSP/1.0\r\n\r\n"])
def test_garbage_raises_framing_error(garbage: bytes) -> None:
    m, _ = demuxer()
    m.feed(frame(0, Stream().packet(0, SLICE)))
    with pytest.raises(FramingError, match="stream offset") as err:
        m.feed(garbage)
    assert isinstance(err.value, ValueError)


def test_partial_method_name_waits() -> None:
    m, _ = demuxer()
    assert m.feed(b"RTS") == [] and m.feed(b"P/1.0 200 OK\r\n\r\n") == [b"RTSP/1.0 200 OK\r\n\r\n"]
    assert m.feed(b"GET_PARAM") == []


def test_header_block_larger_than_max_message_raises() -> None:
    m, _ = demuxer(max_message=1024)
    with pytest.raises(FramingError, match="max_message"):
        m.feed(b"RTSP/1.0 200 OK\r\n" + b"X-Pad: " + b"a" * 2000)


def test_body_larger_than_max_message_raises() -> None:
    m, _ = demuxer(max_message=1024)
    with pytest.raises(FramingError, match="max_message"):
        m.feed(b"RTSP/1.0 200 OK\r\nContent-Length: 5000\r\n\r\n")


def test_bad_content_length_raises() -> None:
    m, _ = demuxer()
    with pytest.raises(FramingError, match="Content-Length"):
        m.feed(b"RTSP/1.0 200 OK\r\nContent-Length: lots\r\n\r\n")


@pytest.mark.parametrize("value", [b"9223372036854775808", b"1" + b"0" * 40, b"-5", b"+5"])
def test_huge_or_signed_content_length_is_a_framing_error(value: bytes) -> None:
    """2**63 and above overflowed Py_ssize_t: OverflowError escaped the framing error path (issue 15 item 15)."""
    m, _ = demuxer()
    with pytest.raises(FramingError, match="Content-Length"):
        m.feed(b"RTSP/1.0 200 OK\r\nContent-Length: " + value + b"\r\n\r\n")


def test_add_channel_validates() -> None:
    m = InterleavedDemuxer()
    with pytest.raises(ValueError):
        m.add_channel(256, H264Depacketizer())
    with pytest.raises(TypeError):
        m.add_channel(0, None)  # type: ignore[arg-type]
