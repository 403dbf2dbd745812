"""Transcoding profiles: one shared pipeline per (camera, profile), started by the first viewer and stopped
after the last; never a transcode for what can be passed through; the sub-stream preferred when live."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from av import VideoFrame
from helpers.access import FAST, auth, grant
from helpers.feed import Unit, clip_camera, decode_all, make_clip, read_units
from test_whep import Viewer, post_offer

from mediaserver.bridge import BridgePool, Encoded, ViewerFeed
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import BadOffer, Egress
from mediaserver.hub import Hub
from mediaserver.transcode import LOW, MAIN, UnknownProfile, get_profile
from signaling.access import ACCESS
from signaling.app import create_app

STEP = 1.0
CAMERA = {"id": "cam1", "name": "Gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97, "codec": "h264"}


@pytest.fixture(scope="module")
def hd_units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "hd.h264", seconds=2, gop=25, size="1280x720"))


def test_profiles() -> None:
    assert get_profile(None) is MAIN and get_profile("low") is LOW
    with pytest.raises(UnknownProfile, match="one of: main, low"):
        get_profile("4k")
    assert LOW.size(1280, 720) == (640, 360) and LOW.size(1920, 1080) == (640, 360)
    assert LOW.size(704, 576) == (440, 360)  # aspect kept (PAL D1), even
    assert LOW.size(320, 240) == (320, 240)  # never upscaled
    assert MAIN.passthrough("h264") and not MAIN.passthrough("h265") and not LOW.passthrough("h264")


async def next_unit(feed: ViewerFeed) -> Any:
    unit = await asyncio.wait_for(feed.next(), STEP)
    assert unit is not None
    return unit


async def test_low_profile_is_one_shared_transcode_started_and_stopped_with_its_viewers(
    hd_units: list[Unit],
) -> None:
    hub, pool = Hub("cam"), BridgePool()
    for unit in hd_units[:10]:
        hub.publish(unit)
    feeds = [ViewerFeed(pool, hub, profile=LOW) for _ in range(20)]
    main = ViewerFeed(pool, hub, profile=MAIN)  # the same camera at its own size: passthrough, not this pipe
    assert pool.active == 2  # the low transcode, and main's live bridge (joined mid-GOP)
    firsts = await asyncio.gather(*(next_unit(f) for f in feeds))
    assert all(u is firsts[0] for u in firsts)  # encoded once for all twenty
    sent: list[Encoded] = [firsts[0]]
    for unit in hd_units[10:40]:  # across the camera's keyframe at 25: the transcode goes on
        hub.publish(unit)
        got = await asyncio.gather(*(next_unit(f) for f in feeds))
        assert all(u is got[0] for u in got)
        sent.append(got[0])
    assert all(isinstance(u, Encoded) for u in sent)
    frames = decode_all([Unit(u.data, u.pts, u.keyframe) for u in sent])
    assert len(frames) == len(sent) and {(f.width, f.height) for f in frames} == {(640, 360)}
    kbps = 8 * sum(len(u.data) for u in sent) / (len(sent) / 25) / 1000
    assert kbps < 1.5 * (LOW.bit_rate or 0) / 1000, kbps  # ~400 kbit/s (with an IDR in it)
    [low] = [b for b in pool.bridges() if b.profile is LOW]
    assert low.frames == len(sent) and low.transcoder.cpu_s > 0

    main_first = await next_unit(main)
    assert main_first.keyframe
    for feed in feeds:
        feed.close()
    main.close()
    await asyncio.sleep(0)
    assert pool.active == 0 and low.done  # stopped with its last viewer


async def test_main_profile_of_an_h264_camera_is_passed_through(hd_units: list[Unit]) -> None:
    hub, pool = Hub("cam"), BridgePool()
    hub.publish(hd_units[0])
    feed = ViewerFeed(pool, hub, profile=MAIN)
    for unit in hd_units[:30]:
        if unit is not hd_units[0]:
            hub.publish(unit)
        assert await next_unit(feed) is unit  # the camera's own bytes
    assert pool.active == 0
    feed.close()


async def test_substream_is_preferred_for_low_when_live(hd_units: list[Unit]) -> None:
    main, sub = Hub("cam1"), Hub("cam1")
    egress = Egress({"cam1": main}.get, substream_lookup={"cam1": sub}.get)
    assert egress.source("cam1", LOW) == (main, LOW)  # sub-stream registered but not live yet: transcode
    sub.publish(hd_units[0])
    assert egress.source("cam1", LOW) == (sub, MAIN)  # passed through as it is
    assert egress.source("cam1", MAIN) == (main, MAIN)
    with pytest.raises(BadOffer, match="unknown profile"):
        await egress.offer("cam1", await Viewer().offer(), "huge")
    await egress.close_all()


async def test_whep_profile_low_plays_640x360_from_a_720p_camera(hd_units: list[Unit]) -> None:
    async with clip_camera("cam1", hd_units, start=5) as hub:
        egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
        app = create_app(LocalWorkerClient(egress), lambda: [CAMERA], access=FAST)
        async with TestClient(TestServer(app, host="127.0.0.1"), headers=auth(grant(app[ACCESS], CAMERA))) as client:
            res = await client.post("/whep/cam1?profile=bogus", data="v=0", headers={"Content-Type": "application/sdp"})
            assert res.status == 400 and "one of: main, low" in (await res.json())["detail"]
            viewer = Viewer()
            res = await client.post("/whep/cam1?profile=low", data=await viewer.offer(),
                                    headers={"Content-Type": "application/sdp"})  # fmt: skip
            assert res.status == 201, await res.text()
            await viewer.answer(await res.text())
            track = await asyncio.wait_for(viewer.track, 5)
            for _ in range(30):  # across the camera's keyframes
                frame = await asyncio.wait_for(track.recv(), 2)
            assert isinstance(frame, VideoFrame) and (frame.width, frame.height) == (640, 360)
            [session] = egress.sessions
            assert session["profile"] == "low" and session["frames_bridged"] == session["frames_sent"]
            full = Viewer()  # the main profile alongside: the camera's own 720p, passed through
            res = await post_offer(client, await full.offer())
            await full.answer(await res.text())
            full_track = await asyncio.wait_for(full.track, 5)
            frame = await asyncio.wait_for(full_track.recv(), 5)
            assert isinstance(frame, VideoFrame) and (frame.width, frame.height) == (1280, 720)
            await viewer.pc.close()
            await full.pc.close()
        await egress.close_all()
