"""Type stubs for core_ext.udprecv (Cython)."""

from collections.abc import Iterable
from typing import Any

from core_ext.depacketize import AccessUnit, Depacketizer
from core_ext.gop import GopCache

BATCH_SIZE: int  # datagrams per recvmmsg(2) call
SLOT_SIZE: int  # bytes per datagram slot; a larger datagram is counted as oversized and dropped
DEFAULT_LIMIT: int  # datagrams per drain() unless told

class UdpReceiver:
    owner: Any  # whoever the batch reader hands this receiver's units to
    cache: GopCache | None  # takes the units of an unwatched camera itself (they are not returned)
    def __init__(
        self, fd: int, depacketizer: Depacketizer, source: str, owner: Any = None, cache: GopCache | None = None
    ) -> None: ...
    @property
    def fd(self) -> int: ...  # -1 once closed
    @property
    def depacketizer(self) -> Depacketizer: ...
    @property
    def datagrams(self) -> int: ...  # from the camera, handed to the depacketiser (bad RTP is counted there)
    @property
    def bytes(self) -> int: ...
    @property
    def foreign(self) -> int: ...  # from another address or source port: dropped
    @property
    def foreign_ssrc(self) -> int: ...  # from the camera's address and port with another SSRC: dropped
    @property
    def source_port(self) -> int | None: ...  # the RTP source port accepted (None until pinned or latched)
    @property
    def ssrc(self) -> int | None: ...  # the SSRC accepted (None until pinned or latched)
    def pin(self, port: int | None = None, ssrc: int | None = None) -> None: ...
    @property
    def oversized(self) -> int: ...  # larger than SLOT_SIZE: dropped
    @property
    def reads(self) -> int: ...  # recvmmsg(2) calls
    def close(self) -> None: ...
    def drain(self, limit: int = ...) -> list[AccessUnit]: ...
    def as_dict(self) -> dict[str, int]: ...

def drain_each(
    receivers: Iterable[UdpReceiver], limit: int = ...
) -> list[tuple[UdpReceiver, list[AccessUnit] | Exception]]: ...
