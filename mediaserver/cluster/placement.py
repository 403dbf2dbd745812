"""Which media worker serves each camera: the front's record, changed only by registry deltas and handovers.

A camera's home is its owner on the hash ring of the current worker count (mediaserver/hashring.py), the same
ring a worker uses to load its share when it boots. When the count changes, `begin(n)` lists the cameras
whose owner changes (~1/n of them: consistent hashing) and adds each to its new owner's set while the old
owner keeps it and keeps answering for it (`route`); `commit()` then points the route at the new owner and
drops the camera from the old one. So during a handover a camera runs on two workers, never on none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mediaserver.cluster.hashring import worker_index, worker_ring


@dataclass(frozen=True, slots=True)
class Move:
    camera_id: str
    source: int  # serves it until the handover commits
    target: int  # its owner on the new ring


class Placement:
    def __init__(self, count: int, cameras: Iterable[str]) -> None:
        self.count = count
        self._ring = worker_ring(count)
        self.route: dict[str, int] = {}  # camera -> the worker that answers for it (offers, status)
        self.serving: list[set[str]] = [set() for _ in range(count)]  # worker -> cameras it should run now
        for camera_id in cameras:
            self.add(camera_id)

    def owner(self, camera_id: str) -> int:
        return worker_index(self._ring, camera_id)

    def add(self, camera_id: str) -> int:
        """Place a new camera on its owner (a known camera stays where it is); returns its worker."""
        if camera_id not in self.route:
            self.route[camera_id] = self.owner(camera_id)
            self.serving[self.route[camera_id]].add(camera_id)
        return self.route[camera_id]

    def servers(self, camera_id: str) -> list[int]:
        """Every worker running the camera now: one, or two during its handover."""
        return [i for i, cameras in enumerate(self.serving) if camera_id in cameras]

    def remove(self, camera_id: str) -> list[int]:
        """Forget a camera; returns the workers that ran it."""
        servers = self.servers(camera_id)
        for index in servers:
            self.serving[index].discard(camera_id)
        self.route.pop(camera_id, None)
        return servers

    def begin(self, count: int) -> list[Move]:
        """Switch to the ring of `count` workers; every camera whose owner changes starts running on its new
        owner too (until `commit`)."""
        self._ring = worker_ring(count)
        self.serving.extend(set() for _ in range(len(self.serving), count))
        self.count = count
        moves = []
        for camera_id, source in self.route.items():
            target = self.owner(camera_id)
            if target != source:
                moves.append(Move(camera_id, source, target))
                self.serving[target].add(camera_id)
        return moves

    def commit(self, moves: Iterable[Move]) -> None:
        """The new owners answer from now on; the old ones stop running the cameras (workers beyond the
        count are gone with whatever they held)."""
        for move in moves:
            if self.route.get(move.camera_id) == move.source:  # not removed from the registry meanwhile
                self.route[move.camera_id] = move.target
                self.serving[move.source].discard(move.camera_id)
        del self.serving[self.count :]
