"""Consistent hashing of cameras onto media workers.

Each worker owns many points ("virtual nodes") on a 64-bit ring; a camera belongs to the first point at or
after its own hash. Adding or removing one of N workers therefore moves only ~1/N of the cameras, and the
front and every worker compute the same owner from the same member list without talking to each other.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

DEFAULT_VNODES = 160  # enough points that the split between a few workers stays within a few percent


def _hash(key: str) -> int:
    # blake2b, not hash(): Python's str hash is salted per process, and every process must agree.
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, nodes: Iterable[str] = (), vnodes: int = DEFAULT_VNODES) -> None:
        self.vnodes = vnodes
        self._points: list[int] = []
        self._owners: dict[int, str] = {}
        self._nodes: set[str] = set()
        for node in nodes:
            self.add(node)

    @property
    def nodes(self) -> set[str]:
        return set(self._nodes)

    def add(self, node: str) -> None:
        if node in self._nodes:
            return
        self._nodes.add(node)
        for i in range(self.vnodes):
            point = _hash(f"{node}#{i}")
            if point not in self._owners:  # a 64-bit collision: the first owner keeps the point
                self._owners[point] = node
                bisect.insort(self._points, point)

    def remove(self, node: str) -> None:
        if node not in self._nodes:
            return
        self._nodes.discard(node)
        self._points = [p for p in self._points if self._owners[p] != node]
        self._owners = {p: self._owners[p] for p in self._points}

    def owner(self, key: str) -> str:
        if not self._points:
            raise LookupError("the ring has no nodes")
        i = bisect.bisect_left(self._points, _hash(key))
        return self._owners[self._points[i % len(self._points)]]


def worker_name(index: int) -> str:
    """The ring member for worker `index` (stable across restarts, so a restarted worker gets its cameras)."""
    return f"worker-{index}"


def worker_ring(count: int, vnodes: int = DEFAULT_VNODES) -> HashRing:
    return HashRing((worker_name(i) for i in range(count)), vnodes)


def worker_index(ring: HashRing, camera_id: str) -> int:
    return int(ring.owner(camera_id).rsplit("-", 1)[1])
