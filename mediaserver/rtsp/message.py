"""RTSP/1.0 requests and responses (RFC 2326): building requests, parsing what a camera answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from mediaserver.rtsp.errors import ErrorKind, RtspError

USER_AGENT = "Goldentime/0.1"
# A response is at most the demuxer's max_message (64 KiB); a camera needs a dozen header lines, not thousands.
MAX_HEADER_LINES = 100


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; repeated ones joined by "\n"
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def cseq(self) -> int:
        try:
            return int(self.header("cseq", "-1").strip())
        except ValueError:
            return -1


def build_request(method: str, url: str, cseq: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {url} RTSP/1.0", f"CSeq: {cseq}", f"User-Agent: {USER_AGENT}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_message(raw: bytes) -> Response | None:
    """Parse a complete RTSP message. Returns None for a request from the server (we only count those)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise RtspError(ErrorKind.MALFORMED_RESPONSE, "RTSP header is not UTF-8") from None
    start, *lines = text.split("\r\n")
    if not start.startswith("RTSP/"):
        return None
    parts = start.split(" ", 2)
    if len(parts) < 2 or not decimal(parts[1]) or len(parts[1]) != 3:
        raise RtspError(ErrorKind.MALFORMED_RESPONSE, f"bad RTSP status line: {start[:80]!r}")
    if len(lines) > MAX_HEADER_LINES:
        raise RtspError(ErrorKind.MALFORMED_RESPONSE, f"{len(lines)} header lines (at most {MAX_HEADER_LINES})")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise RtspError(ErrorKind.MALFORMED_RESPONSE, f"bad RTSP header line: {line[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}\n{value.strip()}" if key in headers else value.strip()
    _check_content_length(headers.get("content-length"), len(body))
    return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body)


def _check_content_length(value: str | None, body_len: int) -> None:
    """The demuxer framed the message by its Content-Length; one parsed on its own (or a repeated header) must
    still be a plain decimal (no sign, no 2**64) matching the body."""
    if value is None:
        return
    if not decimal(value) or int(value) != body_len:
        raise RtspError(ErrorKind.MALFORMED_RESPONSE, f"bad Content-Length {value[:40]!r} for a {body_len}-byte body")


def decimal(text: str, digits: int = 18) -> bool:
    """Plain ASCII digits, at most `digits` of them: str.isdigit() alone accepts "²" and "٣", which int() refuses
    or reads, and int() refuses more than 4300 digits (a ValueError, not an RtspError)."""
    return text.isascii() and text.isdigit() and len(text) <= digits


def parse_session(value: str) -> tuple[str, int]:
    """`Session: 12345;timeout=60` -> ("12345", 60); the default timeout is 60 s (RFC 2326 12.37)."""
    session_id, *params = (p.strip() for p in value.split(";"))
    timeout = 60
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "timeout" and decimal(val.strip()):
            timeout = max(int(val.strip()), 1)  # int() strips less than str.strip() ("\x1f")
    if not session_id:
        raise RtspError(ErrorKind.MALFORMED_RESPONSE, "empty Session header")
    return session_id, timeout


def parse_transport(value: str) -> dict[str, str]:
    """`RTP/AVP/TCP;unicast;interleaved=0-1` -> {"rtp/avp/tcp": "", "unicast": "", "interleaved": "0-1"}."""
    first = value.split(",")[0]
    out: dict[str, str] = {}
    for part in first.split(";"):
        key, _, val = part.strip().partition("=")
        if key:
            out[key.lower()] = val
    return out


def port_pair(value: str) -> tuple[int, int]:
    """ "5000-5001" -> (5000, 5001); a single port implies the next one for RTCP."""
    low, _, high = value.partition("-")
    try:
        a = int(low)
        b = int(high) if high else a + 1
    except ValueError:
        raise RtspError(ErrorKind.MALFORMED_RESPONSE, f"bad port range in Transport: {value!r}") from None
    if not (0 <= a <= 65535 and 0 <= b <= 65535):
        raise RtspError(ErrorKind.MALFORMED_RESPONSE, f"port out of range in Transport: {value!r}")
    return a, b
