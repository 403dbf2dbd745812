"""Type stubs for core_ext.rtp (Cython)."""

class RtpStats:
    """Counters of one RTP stream; all readonly and monotonic."""

    @property
    def packets(self) -> int: ...  # packets received (good or bad)
    @property
    def bytes(self) -> int: ...
    @property
    def lost(self) -> int: ...  # sequence gaps (late arrivals are subtracted again)
    @property
    def reordered(self) -> int: ...  # late packets (dropped)
    @property
    def duplicates(self) -> int: ...
    @property
    def resyncs(self) -> int: ...  # sequence jumps treated as a sender restart, not loss
    @property
    def bad_version(self) -> int: ...
    @property
    def bad_padding(self) -> int: ...
    @property
    def truncated(self) -> int: ...  # header or aggregation/fragment shorter than it claims
    @property
    def bad_payload_type(self) -> int: ...
    @property
    def unsupported(self) -> int: ...  # unsupported NAL/payload types (STAP-B, MTAP, FU-B, PACI, ...)
    @property
    def discarded_aus(self) -> int: ...  # access units dropped because of loss or a broken FU
    @property
    def oversized(self) -> int: ...  # access units dropped for exceeding max_au_size
    def as_dict(self) -> dict[str, int]: ...

class RtpHeader:
    @property
    def marker(self) -> bool: ...
    @property
    def payload_type(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def ext_timestamp(self) -> int: ...
    @property
    def ssrc(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def gap(self) -> bool: ...  # packets were lost (or the sequence jumped) before this one

class RtpReceiver:
    def __init__(self, payload_type: int = -1) -> None: ...
    @property
    def stats(self) -> RtpStats: ...
    @property
    def payload_type(self) -> int: ...
    def parse(self, packet: bytes | bytearray | memoryview) -> RtpHeader | None: ...
