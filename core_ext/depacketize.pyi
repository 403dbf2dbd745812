"""Type stubs for core_ext.depacketize (Cython)."""

from collections.abc import Iterable
from typing import Literal

from core_ext.rtp import RtpStats

Buffer = bytes | bytearray | memoryview

# Bounds on a depacketiser's stored parameter sets (one per kind and id, as a decoder keeps them).
MAX_PARAMETER_SETS_PER_KIND: int  # 32 VPS, 32 SPS, 32 PPS
MAX_PARAMETER_SET_BYTES: int  # 64 KiB over all kinds

class AccessUnit:
    def __init__(self, data: bytes, pts: int, keyframe: bool, codec: str) -> None: ...
    @property
    def data(self) -> bytes: ...  # Annex-B, 4-byte start codes; keyframes begin with parameter sets
    @property
    def pts(self) -> int: ...  # 90 kHz, RTP timestamp extended to 64 bits
    @property
    def keyframe(self) -> bool: ...  # H.264 IDR / H.265 IRAP
    @property
    def codec(self) -> Literal["h264", "h265"]: ...

class Depacketizer:
    def __init__(self, payload_type: int = -1, max_au_size: int = 4 * 1024 * 1024) -> None: ...
    @property
    def stats(self) -> RtpStats: ...
    @property
    def payload_type(self) -> int: ...
    @property
    def max_au_size(self) -> int: ...
    @property
    def codec(self) -> Literal["h264", "h265"]: ...
    def push(self, packet: Buffer) -> list[AccessUnit]: ...
    def flush(self) -> list[AccessUnit]: ...
    @property
    def parameter_set_count(self) -> int: ...  # stored, all kinds
    @property
    def parameter_set_bytes(self) -> int: ...  # stored, Annex-B (start codes included)
    @property
    def parameter_sets_refused(self) -> int: ...  # sets with a new id not stored: the store was full
    def set_parameter_sets(self, nals: Iterable[bytes]) -> None: ...
    def parameter_sets(self) -> bytes: ...

class H264Depacketizer(Depacketizer): ...
class H265Depacketizer(Depacketizer): ...
