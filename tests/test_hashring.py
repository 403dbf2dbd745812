"""The hash ring: a fair split, agreement between processes, and ~1/N of the keys moving on a change."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from mediaserver.cluster.hashring import HashRing, worker_index, worker_ring

KEYS = [f"cam-{i}" for i in range(20_000)]


def test_split_is_even() -> None:
    ring = worker_ring(4)
    counts = Counter(worker_index(ring, key) for key in KEYS)
    assert set(counts) == {0, 1, 2, 3}
    for count in counts.values():
        assert count == pytest.approx(len(KEYS) / 4, rel=0.15)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_adding_a_worker_moves_about_one_in_n_plus_one(n: int) -> None:
    ring = worker_ring(n)
    before = {key: ring.owner(key) for key in KEYS}
    ring.add(f"worker-{n}")
    moved = [key for key in KEYS if ring.owner(key) != before[key]]
    assert all(ring.owner(key) == f"worker-{n}" for key in moved)  # only to the new worker, never between old
    assert len(moved) / len(KEYS) == pytest.approx(1 / (n + 1), rel=0.25)


def test_removing_a_worker_moves_only_its_keys() -> None:
    ring = worker_ring(4)
    before = {key: ring.owner(key) for key in KEYS}
    ring.remove("worker-2")
    for key in KEYS:
        if before[key] != "worker-2":
            assert ring.owner(key) == before[key]
        else:
            assert ring.owner(key) != "worker-2"


def test_every_process_agrees() -> None:
    """Python's own hash() is salted per process; the ring must not be."""
    code = "from mediaserver.cluster.hashring import worker_ring as w; r = w(3); print(r.owner('c1'), r.owner('x'))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    out = run.stdout.split()
    ring = worker_ring(3)
    assert out == [ring.owner("c1"), ring.owner("x")]


def test_empty_ring() -> None:
    with pytest.raises(LookupError):
        HashRing().owner("cam")
