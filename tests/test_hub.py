import asyncio
from dataclasses import dataclass

from mediaserver.hub import MAX_GOP_BYTES, Hub


@dataclass(frozen=True)
class Unit:
    data: bytes
    pts: int
    keyframe: bool


def units(n: int, gop: int, size: int = 100) -> list[Unit]:
    return [Unit(bytes(size), i * 3600, i % gop == 0) for i in range(n)]


def test_gop_cache_starts_at_last_keyframe() -> None:
    hub = Hub("cam")
    for u in units(13, gop=5):
        hub.publish(u)
    gop = hub.gop()
    assert [u.pts // 3600 for u in gop] == [10, 11, 12]
    assert gop[0].keyframe and hub.keyframes == 3


def test_nothing_cached_before_first_keyframe() -> None:
    hub = Hub("cam")
    hub.publish(Unit(b"x", 0, False))
    assert hub.gop() == []


def test_gop_memory_is_bounded() -> None:
    hub = Hub("cam")
    big = MAX_GOP_BYTES // 4
    hub.publish(Unit(bytes(big), 0, True))
    for i in range(1, 8):
        hub.publish(Unit(bytes(big), i, False))
        assert hub.gop_bytes <= MAX_GOP_BYTES
    assert hub.gop() == []  # cut: nothing decodable until the next keyframe
    hub.publish(Unit(b"k", 9, True))
    assert len(hub.gop()) == 1


async def test_slow_subscriber_skips_to_next_keyframe_without_blocking_others() -> None:
    hub = Hub("cam")
    slow = hub.subscribe(maxsize=4)
    fast = hub.subscribe(maxsize=64)
    for u in units(12, gop=10):
        hub.publish(u)
    got_fast = [(await fast.get()) for _ in range(12)]
    assert [u.pts // 3600 for u in got_fast if u] == list(range(12))
    # slow overflowed at the 5th unit: dropped its queue and resumed at the keyframe (unit 10)
    got_slow = [await slow.get(), await slow.get()]
    assert [u.pts // 3600 for u in got_slow if u] == [10, 11]
    assert slow.skipped == 10


async def test_close_wakes_waiting_subscriber() -> None:
    hub = Hub("cam")
    sub = hub.subscribe()
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    hub.close()
    assert await asyncio.wait_for(waiter, 1) is None
    assert hub.subscriber_count == 0


async def test_reset_drops_cache_and_resyncs_subscribers() -> None:
    hub = Hub("cam")
    sub = hub.subscribe()
    for u in units(3, gop=10):
        hub.publish(u)
    hub.reset()
    assert hub.gop() == []
    hub.publish(Unit(b"p", 99, False))  # a delta after a broken stream is useless
    hub.publish(Unit(b"k", 100, True))
    assert (await sub.get()).pts == 100  # type: ignore[union-attr]
