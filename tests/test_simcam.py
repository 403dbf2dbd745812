"""The simulated camera against real RTSP clients (ffprobe, ffmpeg)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest
from helpers.peers import (
    Auth,
    AuthCamera,
    BadRtspServer,
    FaultMode,
    RtspConn,
    Transport,
    capture_rtsp,
    count_frames,
    ffprobe,
    rtp_payload,
    rtsp_status,
    with_credentials,
)

BadRtspFactory = Callable[..., Awaitable[BadRtspServer]]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_h264_mount_probes(h264_camera: str, transport: Transport) -> None:
    probe = ffprobe(h264_camera, transport)
    assert (probe.codec, probe.width, probe.height, probe.fps) == ("h264", 640, 360, 25.0)
    assert probe.profile == "Constrained Baseline"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_h265_mount_probes(h265_camera: str, transport: Transport) -> None:
    probe = ffprobe(h265_camera, transport)
    assert (probe.codec, probe.width, probe.height, probe.fps) == ("hevc", 640, 360, 25.0)


def test_long_gop_mount_probes(long_gop_camera: str) -> None:
    probe = ffprobe(long_gop_camera)
    assert (probe.codec, probe.width, probe.height) == ("h264", 640, 360)


@pytest.mark.parametrize("method", ["basic", "digest"])
def test_auth_rejects_wrong_credentials(auth_camera: AuthCamera, method: Auth) -> None:
    url = auth_camera(method, "admin", "secret")
    for bad in (url, with_credentials(url, "admin", "wrong"), with_credentials(url, "root", "secret")):
        code, stderr = rtsp_status(bad)
        assert code != 0
        assert "401" in stderr, stderr


@pytest.mark.parametrize("method", ["basic", "digest"])
def test_auth_accepts_right_credentials(auth_camera: AuthCamera, method: Auth) -> None:
    url = auth_camera(method, "admin", "secret")
    probe = ffprobe(with_credentials(url, "admin", "secret"))
    assert (probe.codec, probe.width, probe.height) == ("h264", 640, 360)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_real_time_rate_without_drops(h264_camera: str, transport: Transport) -> None:
    # Decoding makes ffmpeg notice broken frames; 4 s of stream time must also take ~4 s of wall time.
    result = count_frames(h264_camera, seconds=4, transport=transport, decode=True)
    assert 98 <= result.frames <= 102, result
    assert result.drops == 0, result
    assert 3.5 <= result.wall_s <= 6.5, result
    assert "error" not in result.stderr.lower(), result.stderr


def test_h265_rate_without_drops(h265_camera: str) -> None:
    result = count_frames(h265_camera, seconds=4, decode=True)
    assert 98 <= result.frames <= 102, result
    assert result.drops == 0, result


def test_multi_slice_pictures_decode_cleanly(sliced_h264_camera: str) -> None:
    # Regression: rtph264pay config-interval=-1 put SPS/PPS before *every* IDR slice, which splits
    # the picture into two access units for every decoder (ffmpeg: "non monotonically increasing dts").
    result = count_frames(sliced_h264_camera, seconds=3, decode=True)
    assert 73 <= result.frames <= 77, result
    assert result.stderr.strip() == "", result.stderr


async def test_parameter_sets_lead_each_keyframe_once(sliced_h264_camera: str) -> None:
    capture = await capture_rtsp(sliced_h264_camera, seconds=2.5)
    frames: dict[int, list[int]] = {}
    for packet in capture.packets:
        payload = rtp_payload(packet)
        nal = payload[1] & 0x1F if payload[0] & 0x1F == 28 else payload[0] & 0x1F  # FU-A: the inner type
        frames.setdefault(int.from_bytes(packet[4:8], "big"), []).append(nal)
    keyframes = [nals for nals in frames.values() if 5 in nals]
    assert keyframes
    for nals in keyframes:
        first_slice = next(i for i, n in enumerate(nals) if n in (1, 5))
        assert {7, 8} <= set(nals[:first_slice]) and not {7, 8} & set(nals[first_slice:]), nals


def test_stream_continues_across_clip_loop(h264_camera: str) -> None:
    # 12 s crosses the 10 s clip's loop point: timestamps must keep rising, nothing dropped.
    result = count_frames(h264_camera, seconds=12, decode=True)
    assert 298 <= result.frames <= 302, result
    assert result.drops == 0, result
    assert "non monotonic" not in result.stderr.lower(), result.stderr


# --- BadRtspServer: each fault mode does what it documents ------------------------------------------


async def _play(url: str) -> RtspConn:
    """DESCRIBE/SETUP/PLAY over TCP interleaved; returns the connection positioned at the media."""
    parts = urlsplit(url)
    conn = RtspConn(*await asyncio.open_connection(parts.hostname, parts.port))
    await conn.request("DESCRIBE", url, Accept="application/sdp")
    _, fields, _ = await conn.request("SETUP", url + "/stream=0", Transport="RTP/AVP/TCP;interleaved=0-1")
    status, _, _ = await conn.request("PLAY", url, Session=fields["session"].split(";")[0])
    assert status == 200
    return conn


async def _frames(conn: RtspConn, count: int) -> list[bytes]:
    return [(await conn.read_frame())[1] for _ in range(count)]


async def test_replay_is_a_clean_continuous_stream(bad_rtsp: BadRtspFactory) -> None:
    server = await bad_rtsp("replay")
    n_packets = len(server.capture.packets)
    conn = await _play(server.url)
    async with asyncio.timeout(20):
        packets = await _frames(conn, n_packets + 20)  # crosses the loop point
    conn.writer.close()
    seqs = [int.from_bytes(p[2:4], "big") for p in packets]
    stamps = [int.from_bytes(p[4:8], "big") for p in packets]
    assert all(p[0] >> 6 == 2 for p in packets)
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    assert all(0 <= (b - a) % 2**32 <= 3600 for a, b in itertools.pairwise(stamps))
    assert stamps[n_packets] != stamps[0]  # the second loop does not repeat the first's timestamps


async def test_replay_plays_in_ffmpeg(bad_rtsp: BadRtspFactory) -> None:
    for codec, name in (("h264", "h264"), ("h265", "hevc")):
        server = await bad_rtsp("replay", codec)
        probe = await asyncio.to_thread(ffprobe, server.url)
        assert (probe.codec, probe.width, probe.height) == (name, 640, 360)


async def test_bad_status_line(bad_rtsp: BadRtspFactory) -> None:
    server = await bad_rtsp("bad_status_line")
    parts = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"OPTIONS {server.url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
    async with asyncio.timeout(5):
        assert await reader.readline() == b"RTSP/1.0 2OO OK\r\n"
    writer.close()


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_no_sprop_sdp(bad_rtsp: BadRtspFactory, codec: str) -> None:
    server = await bad_rtsp("no_sprop", codec)
    sdp = server.sdp()
    assert "sprop-" not in sdp and "a=fmtp:96" in sdp
    assert "sprop-" in server.capture.sdp
    result = await asyncio.to_thread(count_frames, server.url, 2.0, decode=True)
    assert result.frames >= 45  # parameter sets come in-band


@pytest.mark.parametrize("mode", ["rtp_version_1", "rtp_bad_padding", "oversized_frame"])
async def test_packet_faults_every_nth(bad_rtsp: BadRtspFactory, mode: FaultMode) -> None:
    server = await bad_rtsp(mode, good_packets=5, every=4)
    conn = await _play(server.url)
    async with asyncio.timeout(20):
        packets = await _frames(conn, 30)
    conn.writer.close()
    bad = [i for i, p in enumerate(packets) if p[0] >> 6 != 2 or p[0] & 0x20 or len(p) == 65535]
    assert bad[:3] == ([5, 9, 13] if mode != "oversized_frame" else [5, 10, 15])  # injected adds one
    for i in bad:
        if mode == "rtp_version_1":
            assert packets[i][0] >> 6 == 1
        elif mode == "rtp_bad_padding":
            assert packets[i][0] & 0x20 and packets[i][-1] > len(packets[i]) - 12
        else:
            assert len(packets[i]) == 65535 and packets[i][0] >> 6 == 2
    seqs = [int.from_bytes(p[2:4], "big") for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))


async def test_junk_between_frames(bad_rtsp: BadRtspFactory) -> None:
    server = await bad_rtsp("junk_between_frames", good_packets=3, every=100)
    conn = await _play(server.url)
    async with asyncio.timeout(20):
        for _ in range(3):
            await conn.read_frame()
        assert await conn.reader.readexactly(6) == b"\x00\xffjunk"
        assert await conn.reader.readexactly(1) == b"$"
    conn.writer.close()


@pytest.mark.parametrize("mode", ["truncated_frame", "disconnect"])
async def test_connection_ends_after_good_packets(bad_rtsp: BadRtspFactory, mode: FaultMode) -> None:
    server = await bad_rtsp(mode, good_packets=10)
    conn = await _play(server.url)
    async with asyncio.timeout(20):
        await _frames(conn, 10)
        with pytest.raises(asyncio.IncompleteReadError) as caught:
            await conn.read_frame()
    partial = caught.value.partial
    assert partial if mode == "truncated_frame" else not partial


@pytest.mark.parametrize("mode", ["silent_after_play", "hang_after_play"])
async def test_silence_after_play(bad_rtsp: BadRtspFactory, mode: FaultMode) -> None:
    server = await bad_rtsp(mode)
    conn = await _play(server.url)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await conn.reader.readexactly(1)
    keepalive = conn.request("GET_PARAMETER", server.url)
    if mode == "silent_after_play":
        async with asyncio.timeout(5):
            assert (await keepalive)[0] == 200
    else:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await keepalive
    conn.writer.close()


async def test_udp_setup_is_refused(bad_rtsp: BadRtspFactory) -> None:
    server = await bad_rtsp("replay")
    parts = urlsplit(server.url)
    conn = RtspConn(*await asyncio.open_connection(parts.hostname, parts.port))
    async with asyncio.timeout(5):
        status, _, _ = await conn.request("SETUP", server.url, Transport="RTP/AVP;unicast;client_port=5000-5001")
    assert status == 461
    conn.writer.close()
