"""The parts of a camera's SDP (RFC 8866) that ingest needs: video codec, payload type, control URL and
the parameter sets (RFC 6184 sprop-parameter-sets, RFC 7798 sprop-vps/sps/pps)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from urllib.parse import urljoin

from mediaserver.rtsp.errors import ErrorKind, RtspError
from mediaserver.rtsp.message import decimal

CODECS = {"H264": "h264", "H265": "h265", "HEVC": "h265"}


@dataclass(slots=True)
class MediaDescription:
    kind: str  # "video", "audio", ...
    payload_type: int
    encoding: str = ""  # as in rtpmap, upper case: "H264"
    clock_rate: int = 90000
    control: str = ""
    fmtp: dict[str, str] = field(default_factory=dict)

    @property
    def codec(self) -> str | None:
        return CODECS.get(self.encoding)

    def parameter_sets(self) -> list[bytes]:
        """Raw NAL units (no start codes) announced in the SDP; empty if the camera sends them in-band."""
        keys = ("sprop-vps", "sprop-sps", "sprop-pps") if self.codec == "h265" else ("sprop-parameter-sets",)
        nals: list[bytes] = []
        for key in keys:
            for item in self.fmtp.get(key, "").split(","):
                if item.strip():
                    nals.append(_b64(item.strip(), key))
        return nals


@dataclass(slots=True)
class SessionDescription:
    control: str = ""
    media: list[MediaDescription] = field(default_factory=list)

    def video(self) -> MediaDescription:
        """The first video stream in a codec we depacketise."""
        for m in self.media:
            if m.kind == "video" and m.codec:
                return m
        found = ", ".join(f"{m.kind}/{m.encoding or m.payload_type}" for m in self.media) or "no media"
        raise RtspError(ErrorKind.UNSUPPORTED_SDP, f"no H.264/H.265 video in SDP ({found})")


def _b64(value: str, key: str) -> bytes:
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise RtspError(ErrorKind.MALFORMED_SDP, f"{key} is not base64: {value[:40]!r}") from None


def parse_sdp(text: str) -> SessionDescription:
    sdp = SessionDescription()
    current: MediaDescription | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            current = _media_line(value)
            sdp.media.append(current)
        elif kind == "a":
            _attribute(sdp, current, value)
    if not sdp.media:
        raise RtspError(ErrorKind.MALFORMED_SDP, "SDP has no m= line")
    return sdp


def _media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4 or not decimal(parts[3], 3):
        raise RtspError(ErrorKind.MALFORMED_SDP, f"bad m= line: {value[:80]!r}")
    return MediaDescription(kind=parts[0], payload_type=int(parts[3]))


def _attribute(sdp: SessionDescription, media: MediaDescription | None, value: str) -> None:
    name, _, rest = value.partition(":")
    if name == "control":
        if media is None:
            sdp.control = rest.strip()
        else:
            media.control = rest.strip()
    elif media is not None and name == "rtpmap":
        pt, _, encoding = rest.partition(" ")
        if pt.strip() == str(media.payload_type):
            codec, _, clock = encoding.partition("/")
            media.encoding = codec.strip().upper()
            media.clock_rate = int(clock.split("/")[0]) if decimal(clock.split("/")[0], 9) else 90000
    elif media is not None and name == "fmtp":
        pt, _, params = rest.partition(" ")
        if pt.strip() == str(media.payload_type):
            for param in params.split(";"):
                key, sep, val = param.strip().partition("=")
                if sep:
                    media.fmtp[key.strip().lower()] = val.strip()


def control_url(base: str, control: str) -> str:
    """Resolve a control attribute against the content base (absolute, relative, or "*")."""
    if not control or control == "*":
        return base
    if control.lower().startswith(("rtsp://", "rtsps://")):
        return control
    return urljoin(base if base.endswith("/") else base + "/", control)
