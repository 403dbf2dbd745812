"""The bridge opens a viewer on the present: real H.264 from ffmpeg, real decoder and encoder, no mocks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from helpers.feed import Unit, decode_all, make_clip, psnr, read_units

from mediaserver.bridge import BridgePool, Encoded, ViewerFeed
from mediaserver.hub import Hub
from mediaserver.hub import Unit as HubUnit

STEP = 0.5  # s: generous bound for one bridge step (decode a GOP + encode one frame)


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    clip = make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=8, gop=100)
    units = read_units(clip)
    assert [i for i, u in enumerate(units) if u.keyframe] == [0, 100]
    return units


@pytest.fixture(scope="module")
def h265_units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    clip = make_clip(tmp_path_factory.mktemp("clip") / "c.h265", seconds=4, gop=50, codec="h265")
    return read_units(clip, "h265")


async def next_unit(feed: ViewerFeed) -> HubUnit | Encoded:
    unit = await asyncio.wait_for(feed.next(), STEP)
    assert unit is not None
    return unit


def publish(hub: Hub, units: list[Unit]) -> None:
    for unit in units:
        hub.publish(unit)


def matches_source(bridged: Sequence[HubUnit | Encoded], source: list[Unit], index: int) -> float:
    """PSNR of the last bridged picture against the source decoded up to frame `index`."""
    ours = decode_all([Unit(u.data, u.pts, u.keyframe) for u in bridged])[-1]
    return psnr(ours, decode_all(source[: index + 1])[-1])


async def test_mid_gop_join_gets_idr_of_newest_frame_then_passthrough(units: list[Unit]) -> None:
    hub, pool = Hub("cam"), BridgePool()
    publish(hub, units[:61])
    feed = ViewerFeed(pool, hub)

    first = await next_unit(feed)
    assert isinstance(first, Encoded) and first.keyframe
    assert first.pts == units[60].pts  # the newest frame, not the GOP's keyframe
    assert first.data.startswith(b"\x00\x00\x00\x01\x67")  # SPS in front: decodable on its own
    assert matches_source([first], units, 60) > 30

    sent: list[HubUnit | Encoded] = [first]
    for unit in units[61:100]:  # the shared transcode follows the camera frame by frame
        hub.publish(unit)
        sent.append(await next_unit(feed))
    assert [u.pts for u in sent] == [u.pts for u in units[60:100]]
    assert all(isinstance(u, Encoded) for u in sent)
    assert matches_source(sent, units, 99) > 30

    publish(hub, units[100:103])  # the camera's keyframe: passthrough from it on, byte for byte
    for unit in units[100:103]:
        assert await next_unit(feed) == unit
    assert not feed.bridging and pool.active == 0
    feed.close()


async def test_later_joiner_shares_the_bridge_from_an_idr(units: list[Unit]) -> None:
    hub, pool = Hub("cam"), BridgePool()
    publish(hub, units[:30])
    first, second = ViewerFeed(pool, hub), ViewerFeed(pool, hub)
    a, b = await asyncio.gather(next_unit(first), next_unit(second))
    assert a.keyframe and a == b  # connected together: one IDR for both
    hub.publish(units[30])
    assert not (await next_unit(first)).keyframe
    assert not (await next_unit(second)).keyframe

    late = ViewerFeed(pool, hub)
    assert pool.active == 1  # one decoder + encoder for all three
    joining = asyncio.create_task(next_unit(late))  # the viewer is connected and asks for media
    await asyncio.sleep(0)
    hub.publish(units[31])
    joined = await joining
    assert joined.keyframe and joined.pts == units[31].pts
    assert await next_unit(first) == joined  # the same bytes: encoded once
    for feed in (first, second, late):
        feed.close()
    await asyncio.sleep(0)
    assert pool.active == 0  # stopped with its last viewer


async def test_join_at_keyframe_or_empty_hub_needs_no_bridge(units: list[Unit]) -> None:
    hub, pool = Hub("cam"), BridgePool()
    waiting = ViewerFeed(pool, hub)
    first = asyncio.create_task(next_unit(waiting))  # connected, nothing cached: waits for a keyframe
    await asyncio.sleep(0)
    hub.publish(units[99])
    hub.publish(units[100])
    assert await first == units[100]
    at_key = ViewerFeed(pool, hub)  # the newest unit is the keyframe: sent as is
    assert await next_unit(at_key) == units[100]
    hub.publish(units[101])
    assert await next_unit(at_key) == units[101]
    assert await next_unit(waiting) == units[101]
    assert pool.active == 0
    waiting.close()
    at_key.close()


async def test_picture_loss_is_answered_from_the_cache(units: list[Unit]) -> None:
    hub, pool = Hub("cam"), BridgePool()
    hub.publish(units[0])
    feed = ViewerFeed(pool, hub)
    assert await next_unit(feed) == units[0]
    publish(hub, units[1:40])
    for unit in units[1:40]:  # passthrough
        assert await next_unit(feed) == unit
    feed._last_key_at = 0.0  # pretend the last keyframe was long ago (refresh is rate limited)
    assert feed.refresh()
    hub.publish(units[40])
    idr = await next_unit(feed)
    assert isinstance(idr, Encoded) and idr.keyframe and idr.pts >= units[39].pts
    assert matches_source([idr], units, (idr.pts - units[0].pts) // 3600) > 30
    assert not feed.refresh()  # rate limited
    feed.close()


async def test_h265_camera_is_transcoded_to_h264(h265_units: list[Unit]) -> None:
    hub, pool = Hub("cam265", codec="h265"), BridgePool()
    publish(hub, h265_units[:20])
    feed = ViewerFeed(pool, hub)
    first = await next_unit(feed)
    assert first.keyframe and first.pts == h265_units[19].pts
    sent = [first]
    for unit in h265_units[20:60]:  # across the camera's keyframe at 50: the transcode goes on
        hub.publish(unit)
        sent.append(await next_unit(feed))
    assert all(isinstance(u, Encoded) for u in sent)
    ours = decode_all([Unit(u.data, u.pts, u.keyframe) for u in sent])[-1]
    assert psnr(ours, decode_all(h265_units[:60], "h265")[-1]) > 30
    feed.close()


async def test_viewer_still_connecting_gets_nothing_stale(units: list[Unit]) -> None:
    hub, pool = Hub("cam"), BridgePool()
    publish(hub, units[:50])
    feed = ViewerFeed(pool, hub)  # offer answered; ICE/DTLS still running: the bridge decodes meanwhile
    publish(hub, units[50:60])
    await asyncio.sleep(0.1)
    joining = asyncio.create_task(next_unit(feed))  # connected
    await asyncio.sleep(0)
    hub.publish(units[60])
    first = await joining
    assert first.keyframe and first.pts == units[60].pts  # the present, not frame 49
    feed.close()


async def test_comparison_policies_replay_the_gop_or_wait_for_the_keyframe(units: list[Unit]) -> None:
    """The benchmarks' baselines: "gop" shows the past first; "keyframe" waits for the camera."""
    hub, pool = Hub("cam"), BridgePool()
    publish(hub, units[:61])
    replay = ViewerFeed(pool, hub, start="gop")
    wait = ViewerFeed(pool, hub, start="keyframe")
    first = await next_unit(replay)
    assert first == units[0] and pool.active == 0  # the GOP's keyframe, 2.4 s old, no bridge
    pending = asyncio.ensure_future(wait.next())
    await asyncio.sleep(0)  # the viewer connects (its first request subscribes it)
    publish(hub, units[61:101])
    assert await asyncio.wait_for(pending, STEP) == units[100]
    replay.close()
    wait.close()
