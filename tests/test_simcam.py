"""The simulated camera against real RTSP clients (ffprobe, ffmpeg)."""

from __future__ import annotations

import pytest
from peers import Auth, AuthCamera, Transport, count_frames, ffprobe, rtsp_status, with_credentials


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


def test_stream_continues_across_clip_loop(h264_camera: str) -> None:
    # 12 s crosses the 10 s clip's loop point: timestamps must keep rising, nothing dropped.
    result = count_frames(h264_camera, seconds=12, decode=True)
    assert 298 <= result.frames <= 302, result
    assert result.drops == 0, result
    assert "non monotonic" not in result.stderr.lower(), result.stderr
