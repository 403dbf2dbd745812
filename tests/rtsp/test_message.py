import pytest

from mediaserver.rtsp.message import (
    RtspError,
    build_request,
    parse_message,
    parse_session,
    parse_transport,
    port_pair,
)


def test_build_request_has_cseq_and_headers() -> None:
    raw = build_request("SETUP", "rtsp://cam/track1", 3, {"Transport": "RTP/AVP/TCP;interleaved=0-1"})
    lines = raw.decode().split("\r\n")
    assert lines[0] == "SETUP rtsp://cam/track1 RTSP/1.0"
    assert "CSeq: 3" in lines and "Transport: RTP/AVP/TCP;interleaved=0-1" in lines
    assert raw.endswith(b"\r\n\r\n")


def test_parse_response_with_body_and_repeated_headers() -> None:
    raw = (
        b'RTSP/1.0 401 Unauthorized\r\nCSeq: 7\r\nWWW-Authenticate: Digest realm="r", nonce="n"\r\n'
        b'WWW-Authenticate: Basic realm="r"\r\nContent-Length: 2\r\n\r\nhi'
    )
    response = parse_message(raw)
    assert response is not None
    assert (response.status, response.reason, response.cseq) == (401, "Unauthorized", 7)
    assert response.header("www-authenticate").split("\n") == [
        'Digest realm="r", nonce="n"',
        'Basic realm="r"',
    ]
    assert response.body == b"hi"


def test_request_from_server_is_not_a_response() -> None:
    assert parse_message(b"GET_PARAMETER rtsp://x RTSP/1.0\r\nCSeq: 1\r\n\r\n") is None


@pytest.mark.parametrize(
    "raw",
    [b"RTSP/1.0 2OO OK\r\nCSeq: 1\r\n\r\n", b"RTSP/1.0\r\n\r\n", b"RTSP/1.0 200 OK\r\nno colon here\r\n\r\n"],
)
def test_malformed_responses_raise_with_a_kind(raw: bytes) -> None:
    with pytest.raises(RtspError) as e:
        parse_message(raw)
    assert e.value.kind == "malformed_response"


def test_session_header() -> None:
    assert parse_session("4F2A;timeout=30") == ("4F2A", 30)
    assert parse_session("abc") == ("abc", 60)
    with pytest.raises(RtspError):
        parse_session(";timeout=5")


def test_transport_and_ports() -> None:
    params = parse_transport("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=1234")
    assert params["interleaved"] == "2-3" and "unicast" in params
    assert port_pair("5000-5001") == (5000, 5001)
    assert port_pair("7000") == (7000, 7001)
    with pytest.raises(RtspError):
        port_pair("x-y")
    with pytest.raises(RtspError):
        port_pair("70000-70001")


@pytest.mark.parametrize(
    "length", [b"-1", b"9223372036854775808", b"99999999999999999999999", b"3", b"+2", b"\xd9\xa2"]
)
def test_content_length_must_be_plain_and_match_the_body(length: bytes) -> None:
    """A message parsed on its own (the demuxer frames by the same header) with a signed, huge or wrong length."""
    with pytest.raises(RtspError) as bad:
        parse_message(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: " + length + b"\r\n\r\nhi")
    assert bad.value.kind == "malformed_response"


def test_too_many_header_lines_are_refused() -> None:
    head = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n" + b"X-Pad: a\r\n" * 200
    with pytest.raises(RtspError, match="header lines"):
        parse_message(head + b"\r\n")
    assert parse_message(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n" + b"X-Pad: a\r\n" * 90 + b"\r\n") is not None
