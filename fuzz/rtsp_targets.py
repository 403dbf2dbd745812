"""Fuzz targets for the text a camera and a viewer send: `rtsp` (mediaserver/rtsp/message.py: a response and the
header values the client reads from it), `sdp` (mediaserver/rtsp/sdp.py: a camera's DESCRIBE body) and `whep`
(mediaserver/egress.py check_offer, aiortc's SDP parser behind it: a viewer's offer).

Documented errors: RtspError (with an ErrorKind) for the camera's text, BadOffer for the viewer's; anything else
escaping is a finding. A result, when there is one, is checked for the shape the caller relies on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mediaserver.rtsp.errors import ErrorKind, RtspError
from mediaserver.rtsp.message import (
    MAX_HEADER_LINES,
    Response,
    parse_message,
    parse_session,
    parse_transport,
    port_pair,
)
from mediaserver.rtsp.sdp import control_url, parse_sdp

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "core_ext" / "fixtures"
SEEDS = Path(__file__).resolve().parent / "seeds"


def _documented(exc: RtspError) -> None:
    assert isinstance(exc.kind, ErrorKind), exc.kind


def rtsp_message(data: bytes) -> None:
    """A complete message (the demuxer framed it), then what RtspClient reads from a response's headers."""
    try:
        response = parse_message(data)
    except RtspError as exc:
        return _documented(exc)
    if response is None:
        assert not data.partition(b"\r\n\r\n")[0].startswith(b"RTSP/")
        return
    assert type(response) is Response and 0 <= response.status <= 999 and isinstance(response.cseq, int)
    assert len(response.headers) <= MAX_HEADER_LINES and response.body == data.partition(b"\r\n\r\n")[2]
    for read in (_session, _transport):
        try:
            read(response)
        except RtspError as exc:
            _documented(exc)


def _session(response: Response) -> None:
    if "session" in response.headers:
        session_id, timeout = parse_session(response.header("session"))
        assert session_id and timeout >= 1


def _transport(response: Response) -> None:
    transport = parse_transport(response.header("transport"))
    for key in ("interleaved", "server_port", "client_port"):
        if key in transport:
            a, b = port_pair(transport[key])
            assert 0 <= a <= 65535 and 0 <= b <= 65535


def sdp(data: bytes) -> None:
    """A DESCRIBE body (decoded as the client does), then the video stream, its parameter sets, its control URL."""
    try:
        description = parse_sdp(data.decode("utf-8", errors="replace"))
        video = description.video()
        nals = video.parameter_sets()
    except RtspError as exc:
        return _documented(exc)
    assert video.codec in ("h264", "h265") and all(type(n) is bytes for n in nals)
    assert isinstance(video.payload_type, int) and isinstance(video.clock_rate, int)
    url = control_url(control_url("rtsp://127.0.0.1:8554/cam/", description.control), video.control)
    assert isinstance(url, str)


def whep_offer(data: bytes) -> None:
    """A viewer's offer, as the WHEP endpoint decodes its body."""
    from mediaserver.egress import BadOffer, check_offer  # here: the WebRTC stack loads only for this target

    try:
        check_offer(data.decode("utf-8", errors="replace"))
    except BadOffer:
        pass


# -- seeds -----------------------------------------------------------------------------------------------------------


def _camera_sdps() -> list[str]:
    fixtures = json.loads((FIXTURES / "fixtures.json").read_text())
    return [str(f["sdp"]) for f in fixtures.values()]


def _fault_mode_responses() -> list[bytes]:
    """What tests/helpers/peers.py's misbehaving camera answers to each request, in each of its fault modes."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from helpers.peers import FAULT_MODES, BadRtspServer, Capture, _Conn

    out = []
    for sdp_text in _camera_sdps()[:2]:
        capture = Capture("h264", sdp_text, [])
        for mode in FAULT_MODES:
            server = BadRtspServer(capture, mode)
            server.url = "rtsp://127.0.0.1:8554/cam"
            for method, headers in (
                ("OPTIONS", {"cseq": "1"}),
                ("DESCRIBE", {"cseq": "2"}),
                ("SETUP", {"cseq": "3", "transport": "RTP/AVP/TCP;unicast;interleaved=0-1"}),
                ("SETUP", {"cseq": "4", "transport": "RTP/AVP;unicast;client_port=5000-5001"}),
                ("PLAY", {"cseq": "5"}),
                ("FOO", {"cseq": "6"}),
            ):
                out.append(server._answer(method, headers, _Conn()).encode())
    return sorted(set(out))


def rtsp_seeds() -> list[bytes]:
    extra = [
        b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 1A2B3C;timeout=30\r\n"
        b"Transport: RTP/AVP;unicast;client_port=50000-50001;server_port=6970-6971;ssrc=11223344\r\n\r\n",
        b'RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\nWWW-Authenticate: Digest realm="cam", nonce="abc"\r\n\r\n',
        b"ANNOUNCE rtsp://127.0.0.1/cam RTSP/1.0\r\nCSeq: 9\r\n\r\n",
    ]
    return _fault_mode_responses() + extra


def sdp_seeds() -> list[bytes]:
    return [s.encode() for s in _camera_sdps()]


def whep_seeds() -> list[bytes]:
    """Offers captured from the project's viewers (aiortc, Chromium): fuzz/seeds/whep-*.sdp."""
    return [p.read_bytes() for p in sorted(SEEDS.glob("whep-*.sdp"))]
