import pytest

from mediaserver.rtsp.message import RtspError
from mediaserver.rtsp.sdp import control_url, parse_sdp

# As gst-rtsp-server announces an H.264 mount (trimmed).
H264_SDP = """v=0
o=- 1188340656180883 1 IN IP4 127.0.0.1
s=Session streamed with GStreamer
t=0 0
a=control:*
m=video 0 RTP/AVP 96
c=IN IP4 0.0.0.0
a=rtpmap:96 H264/90000
a=framerate:25
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAHtkAoC/5YQAAAwABAAADADIPFi5I,aMuDyyA=;profile-level-id=42C01E
a=control:stream=0
"""

H265_SDP = """v=0
m=audio 0 RTP/AVP 0
a=control:trackID=1
m=video 0 RTP/AVP 97
a=rtpmap:97 H265/90000
a=fmtp:97 sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwBdlZgJ;\
sprop-sps=QgEBAWAAAAMAkAAAAwAAAwBdoAUCAXHy5ZWaSTK8BAAAAwAEAAADAGQg;sprop-pps=RAHBcrRiQA==
a=control:rtsp://10.0.0.9/live/trackID=2
"""


def test_h264_parameter_sets_and_control() -> None:
    video = parse_sdp(H264_SDP).video()
    assert (video.codec, video.payload_type, video.clock_rate) == ("h264", 96, 90000)
    sps, pps = video.parameter_sets()
    assert sps[0] & 0x1F == 7 and pps[0] & 0x1F == 8
    assert control_url("rtsp://127.0.0.1:8554/cam/", video.control) == "rtsp://127.0.0.1:8554/cam/stream=0"


def test_h265_parameter_sets_in_order_and_absolute_control() -> None:
    video = parse_sdp(H265_SDP).video()
    assert video.codec == "h265" and video.payload_type == 97
    assert [(nal[0] >> 1) & 0x3F for nal in video.parameter_sets()] == [32, 33, 34]
    assert control_url("rtsp://127.0.0.1/live", video.control) == "rtsp://10.0.0.9/live/trackID=2"


def test_relative_control_without_trailing_slash_and_star() -> None:
    assert control_url("rtsp://h/live", "track1") == "rtsp://h/live/track1"
    assert control_url("rtsp://h/live", "*") == "rtsp://h/live"
    assert control_url("rtsp://h/live", "") == "rtsp://h/live"


def test_sdp_without_parameter_sets_is_allowed() -> None:
    video = parse_sdp(H264_SDP.replace("sprop-parameter-sets=Z0LAHtkAoC/5YQAAAwABAAADADIPFi5I,aMuDyyA=;", "")).video()
    assert video.parameter_sets() == []


@pytest.mark.parametrize(
    ("sdp", "kind"),
    [
        ("v=0\ns=nothing\n", "malformed_sdp"),
        ("v=0\nm=video\n", "malformed_sdp"),
        ("v=0\nm=video 0 RTP/AVP 96\na=rtpmap:96 MJPEG/90000\n", "unsupported_sdp"),
        (H264_SDP.replace("sprop-parameter-sets=Z0", "sprop-parameter-sets=!!"), "malformed_sdp"),
    ],
)
def test_bad_sdp(sdp: str, kind: str) -> None:
    with pytest.raises(RtspError) as e:
        parse_sdp(sdp).video().parameter_sets()
    assert e.value.kind == kind
