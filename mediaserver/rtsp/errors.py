"""The RTSP error vocabulary: why a camera session failed. Each kind is counted per camera (ingest.errors), shown
as `last_error` and exported as the `kind` label of `goldentime_rtsp_errors_total`, so these values are the
metric's only label values: add a kind here, never a string literal at a raise site."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    # reaching the camera
    BAD_URL = "bad_url"  # not rtsp[s]://host[:port]/path, or a bad tls_sha256 pin
    CONNECT_TIMEOUT = "connect_timeout"
    CONNECT_FAILED = "connect_failed"  # refused, unreachable
    CONNECTION_LOST = "connection_lost"  # EOF or reset from the camera
    TLS = "tls"  # rtsps://: handshake or certificate verification failed, or not the pinned certificate
    TIMEOUT = "timeout"  # a request had no answer in time
    # what it answered
    AUTH_FAILED = "auth_failed"  # 401 with our credentials
    AUTH_UNSUPPORTED = "auth_unsupported"  # a scheme or Digest algorithm we do not speak
    AUTH_BASIC_REFUSED = "auth_basic_refused"  # Basic in clear over plain TCP, not allowed for this camera
    RTSP_STATUS = "rtsp_status"  # any other non-200 status (4xx/5xx)
    MALFORMED_RESPONSE = "malformed_response"
    MALFORMED_SDP = "malformed_sdp"
    UNSUPPORTED_SDP = "unsupported_sdp"  # no H.264/H.265 video
    FRAMING = "framing"  # the TCP stream is not RTSP interleaved framing
    # the media
    STALLED = "stalled"  # no complete access unit for the stall timeout (bytes alone are not progress)
    NO_KEYFRAME = "no_keyframe"  # no decodable keyframe after PLAY
    UDP_PORTS = "udp_ports"  # no free local port pair
    UDP_SOCKET = "udp_socket"  # the RTP socket failed
    INTERNAL = "internal"  # a bug: the camera reconnects, the worker goes on


class RtspError(Exception):
    """A camera session failed; `kind` says why (counters, metrics label)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
