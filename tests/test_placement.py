"""Placement: which worker serves each camera, and what a change of the worker count moves (10,000 cameras)."""

from __future__ import annotations

import pytest

from mediaserver.cluster.placement import Placement

CAMERAS = [f"cam-{i}" for i in range(10_000)]


def test_every_camera_has_one_worker_its_ring_owner() -> None:
    placement = Placement(2, CAMERAS)
    assert len(placement.route) == len(CAMERAS)
    assert sum(len(s) for s in placement.serving) == len(CAMERAS)
    assert all(placement.servers(cid) == [placement.owner(cid)] for cid in CAMERAS[:200])


def test_adding_a_worker_moves_a_third_to_it_started_before_stopped() -> None:
    placement = Placement(2, CAMERAS)
    before = dict(placement.route)
    moves = placement.begin(3)
    assert len(moves) / len(CAMERAS) == pytest.approx(1 / 3, rel=0.2)
    assert {m.target for m in moves} == {2} and all(before[m.camera_id] == m.source for m in moves)
    for move in moves[:50]:  # handover: running on both, still answered by the old worker
        assert sorted(placement.servers(move.camera_id)) == sorted([move.source, 2])
        assert placement.route[move.camera_id] == move.source
    placement.commit(moves)
    moved = {m.camera_id for m in moves}
    assert all(placement.route[c] == (2 if c in moved else before[c]) for c in CAMERAS)
    assert all(len(placement.servers(c)) == 1 for c in CAMERAS[:500])


def test_removing_a_worker_moves_only_its_cameras() -> None:
    placement = Placement(3, CAMERAS)
    before = dict(placement.route)
    moves = placement.begin(2)
    assert {m.camera_id for m in moves} == {c for c, w in before.items() if w == 2}
    assert all(m.target in (0, 1) for m in moves)
    placement.commit(moves)
    assert len(placement.serving) == 2 and sum(len(s) for s in placement.serving) == len(CAMERAS)
    assert all(placement.route[c] == before[c] for c in CAMERAS if before[c] != 2)


def test_a_camera_removed_during_a_handover_stays_removed() -> None:
    placement = Placement(2, CAMERAS[:1000])
    moves = placement.begin(3)
    gone = moves[0]
    assert sorted(placement.remove(gone.camera_id)) == sorted([gone.source, gone.target])
    placement.add("new-camera")  # placed on the new ring at once
    assert placement.route["new-camera"] == placement.owner("new-camera")
    placement.commit(moves)
    assert gone.camera_id not in placement.route and placement.servers(gone.camera_id) == []
