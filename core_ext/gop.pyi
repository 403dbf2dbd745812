"""Type stubs for core_ext.gop (Cython)."""

from typing import Any

from core_ext.recorder import Recorder

def starts_with_parameter_sets(codec: str, data: bytes) -> bool: ...

class GopCache:
    units: int  # published, cached or not
    keyframes: int
    bytes: int
    last_unit_at: float  # monotonic seconds
    last_keyframe_at: float
    direct: bool  # the cache is the only consumer: the UDP receiver and the TCP demuxer may add units themselves
    recorder: Recorder | None  # the recording ring every unit added is copied into (None: not recorded)
    record_slot: int
    def __init__(self, max_bytes: int, max_units: int) -> None: ...
    @property
    def nbytes(self) -> int: ...  # bytes cached
    @property
    def max_bytes(self) -> int: ...
    @property
    def max_units(self) -> int: ...
    def add(self, unit: Any, now: float) -> None: ...
    def snapshot(self) -> list[Any]: ...
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
