"""Ingest against real cameras (gst-rtsp-server) checked against ffprobe, and against faulty cameras."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Literal, cast

import av
import pytest
from av.video.codeccontext import VideoCodecContext
from helpers.peers import AuthCamera, BadRtspServer, Capture, capture_rtsp, ffprobe, simcam, with_credentials

from mediaserver.hub import Hub, Unit
from mediaserver.ingest import CameraIngest, State
from mediaserver.registry import split_credentials
from mediaserver.rtsp.client import Source, Timeouts
from mediaserver.rtsp.reconnect import Backoff, RateLimiter

FAST = Timeouts(connect=2.0, response=1.0, stall=1.0, first_keyframe=2.0)


class Recorder:
    """Collects what a hub hands its subscribers, so tests decode exactly what viewers would get."""

    def __init__(self, hub: Hub) -> None:
        self.units: list[Unit] = []
        self._sub = hub.subscribe(maxsize=10_000)
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while (unit := await self._sub.get()) is not None:
            self.units.append(unit)


def ingest_for(url: str, transport: str = "tcp", timeouts: Timeouts = FAST) -> tuple[CameraIngest, Recorder]:
    clean, user, password = split_credentials(url)
    hub = Hub("cam")
    recorder = Recorder(hub)
    backoff = Backoff(base=0.05, cap=0.3)
    source = Source.of_camera(clean, user, password, transport)
    ingest = CameraIngest(hub, source, RateLimiter(100), timeouts, backoff)
    ingest.start()
    return ingest, recorder


async def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def decode(units: list[Unit], codec: str) -> list[av.VideoFrame]:
    ctx = cast(VideoCodecContext, av.CodecContext.create(codec, "r"))
    frames = []
    for unit in units:
        frames += ctx.decode(av.Packet(unit.data))
    return frames


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("camera", ["h264_camera", "h265_camera"])
async def test_ingest_matches_ffprobe(
    camera: str, transport: Literal["tcp", "udp"], request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(camera)
    probe = await asyncio.to_thread(ffprobe, url, transport)
    ingest, recorder = ingest_for(url, transport)
    try:
        await wait_for(lambda: len(recorder.units) >= 60, 10)
    finally:
        await ingest.stop()
    units = recorder.units
    codec = "hevc" if ingest.hub.codec == "h265" else "h264"
    assert codec == probe.codec
    assert units[0].keyframe and sum(u.keyframe for u in units) >= 2  # 1 s GOP
    frames = decode(units, codec)
    assert len(frames) >= len(units) - 2  # a decoder may hold the last frame or two
    assert {(f.width, f.height) for f in frames} == {(probe.width, probe.height)}
    steps = {b.pts - a.pts for a, b in itertools.pairwise(units)}
    assert steps == {int(90000 / probe.fps)}  # one 90 kHz step per frame at ffprobe's frame rate
    assert ingest.errors == {} and ingest.status()["packets_lost"] == 0


async def test_camera_with_access_unit_delimiters(h264_clip: Path) -> None:
    """Many cameras (and x264 by default) start each unit with an AUD, before the parameter sets."""
    with simcam({"cam": h264_clip}, aud=True) as cam:
        ingest, recorder = ingest_for(cam.url("cam"))
        try:
            await wait_for(lambda: len(recorder.units) >= 30, 10)
        finally:
            await ingest.stop()
    assert recorder.units[0].keyframe
    assert all(u.data.startswith(b"\x00\x00\x00\x01\x09") for u in recorder.units if not u.keyframe)
    assert len(decode(recorder.units, "h264")) >= 28


@pytest.mark.parametrize("method", ["basic", "digest"])
async def test_auth(method: str, auth_camera: AuthCamera) -> None:
    url = auth_camera(method, "operator", "s3cret")  # type: ignore[arg-type]
    url += "?allow_basic=1" if method == "basic" else ""  # Basic sends the password in clear: opt-in per camera
    good, good_units = ingest_for(with_credentials(url, "operator", "s3cret"))
    bad, bad_units = ingest_for(with_credentials(url, "operator", "wrong"))
    try:
        await wait_for(lambda: len(good_units.units) >= 10 and bad.errors["auth_failed"] >= 2, 10)
    finally:
        await asyncio.gather(good.stop(), bad.stop())
    assert good.errors == {} and good.connects == 1
    assert bad_units.units == [] and bad.connects == 0


async def test_basic_auth_is_refused_unless_the_camera_allows_it(auth_camera: AuthCamera) -> None:
    """Over plain TCP, Basic would put the password on the wire in clear (issue 15 item 14)."""
    url = auth_camera("basic", "operator", "s3cret")
    ingest, units = ingest_for(with_credentials(url, "operator", "s3cret"))
    try:
        await wait_for(lambda: "auth_basic_refused: " in ingest.last_error, 10)
        assert "allow_basic" in ingest.last_error  # says how to opt in
    finally:
        await ingest.stop()
    assert units.units == [] and ingest.connects == 0 and ingest.errors["auth_basic_refused"] >= 1


@pytest.fixture(scope="module")
def capture(h264_camera: str) -> Capture:
    return asyncio.run(capture_rtsp(h264_camera, seconds=2.5))


async def test_keep_alive_before_the_session_timeout(capture: Capture) -> None:
    async with BadRtspServer(capture, "replay", session_timeout=2) as server:
        ingest, recorder = ingest_for(server.url)
        try:
            await asyncio.sleep(3.5)
        finally:
            await ingest.stop()
    keepalives = [r for r in server.requests if r.startswith("GET_PARAMETER")]
    assert len(keepalives) >= 2  # every timeout/2 = 1 s, GET_PARAMETER as the server's Public lists it
    assert ingest.connects == 1 and ingest.errors == {} and len(recorder.units) >= 60
    assert server.requests[-1].startswith("TEARDOWN")  # stopping a camera ends its session politely


# mode -> (error kind the ingest must count, or None; whether media must keep flowing)
FAULTS: dict[str, tuple[str | None, bool]] = {
    "bad_status_line": ("malformed_response", False),
    "no_sprop": (None, True),  # parameter sets in-band: works, with a warning
    "rtp_version_1": (None, True),  # bad packets counted and skipped
    "rtp_bad_padding": (None, True),
    "oversized_frame": (None, True),
    "junk_between_frames": ("framing", True),  # resynchronised by reconnecting
    "truncated_frame": ("connection_lost", True),
    "disconnect": ("connection_lost", True),
    "silent_after_play": ("stalled", False),
    "hang_after_play": ("stalled", False),
}


async def test_faulty_cameras_are_counted_and_reconnected_while_others_carry_on(
    capture: Capture, h264_camera: str
) -> None:
    servers = {mode: BadRtspServer(capture, mode, good_packets=60, every=15) for mode in FAULTS}  # type: ignore[arg-type]
    urls = {mode: await server.start() for mode, server in servers.items()}
    healthy, healthy_units = ingest_for(h264_camera)
    ingests = {mode: ingest_for(url) for mode, url in urls.items()}
    try:
        await asyncio.sleep(5)
        rate_window = len(healthy_units.units)
        await asyncio.sleep(1)
        healthy_rate = len(healthy_units.units) - rate_window
        live = {mode: ingest.status() for mode, (ingest, _) in ingests.items()}
    finally:
        await asyncio.gather(healthy.stop(), *(i.stop() for i, _ in ingests.values()))
        await asyncio.gather(*(s.close() for s in servers.values()))
    assert 22 <= healthy_rate <= 28 and healthy.errors == {}  # 25 fps, undisturbed
    for mode, (kind, flows) in FAULTS.items():
        ingest, recorder = ingests[mode]
        if kind is not None:
            assert ingest.errors[kind] >= 1, (mode, ingest.errors)
            assert servers[mode].connections >= 2, mode  # reconnected
        if flows:
            assert len(recorder.units) >= 25, (mode, len(recorder.units), ingest.errors)
        else:
            assert recorder.units == [], mode
    assert live["no_sprop"]["warnings"] == {"sdp_no_parameter_sets": 1}, live["no_sprop"]
    # bad packets are counted and skipped without dropping the session
    for mode, counter in [("rtp_version_1", "bad_version"), ("rtp_bad_padding", "bad_padding"),
                          ("oversized_frame", "unsupported")]:  # fmt: skip
        assert live[mode]["state"] == State.STREAMING.value and live[mode]["connects"] == 1, live[mode]
        assert live[mode]["rtp_errors"][counter] >= 1, live[mode]  # type: ignore[index]


async def test_a_district_coming_back_does_not_stampede() -> None:
    """40 cameras whose host refuses connections: the process-wide cap bounds attempts per second."""
    limiter = RateLimiter(rate=10, burst=10)
    closed_port = "rtsp://127.0.0.1:9/cam"  # discard port: nothing listens there
    ingests = [
        CameraIngest(Hub(f"c{i}"), Source(closed_port), limiter, FAST, Backoff(base=0.01, cap=0.05)) for i in range(40)
    ]
    for ingest in ingests:
        ingest.start()
    await asyncio.sleep(2.0)
    await asyncio.gather(*(i.stop() for i in ingests))
    attempts = sum(i.attempts for i in ingests)
    assert 20 <= attempts <= 10 + 10 * 2.0 + 2  # burst + rate * time (+ rounding)
    assert all(i.errors["connect_failed"] >= i.attempts - 1 for i in ingests)  # the last may be cut by stop()


async def test_first_connects_use_the_start_budget_and_retries_the_reconnect_cap() -> None:
    """A restarted worker's cameras all try at once (start budget); their retries still queue behind the cap."""
    limiter, start = RateLimiter(rate=5, burst=5), RateLimiter(rate=1000, burst=1000)
    closed_port = "rtsp://127.0.0.1:9/cam"
    ingests = [
        CameraIngest(Hub(f"c{i}"), Source(closed_port), limiter, FAST, Backoff(0.01, 0.05), start_limiter=start)
        for i in range(40)
    ]
    for ingest in ingests:
        ingest.start()
    await asyncio.sleep(1.0)
    await asyncio.gather(*(i.stop() for i in ingests))
    assert start.granted == 40  # every camera's first attempt at once, none waited for the cap
    assert limiter.granted <= 5 + 5 * 1.0 + 2  # the retries: burst + rate * time (+ rounding)
    assert sum(i.attempts for i in ingests) == start.granted + limiter.granted


async def test_media_waiting_unread_in_the_socket_is_not_a_stall(h264_camera: str) -> None:
    """A worker that falls behind (here: an idle camera read only every 30 s) must not cut a camera whose data sits
    unread in its socket; before, a few seconds of CPU starvation dropped thousands of healthy cameras at once."""
    from mediaserver.rtsp.batch_reader import BatchReader

    batch = BatchReader(30.0)
    hub = Hub("slow")
    ingest = CameraIngest(hub, Source(h264_camera), RateLimiter(100), FAST, Backoff(), batch=batch)
    ingest.start()
    try:
        await wait_for(lambda: ingest.state == State.STREAMING and len(batch) == 1, 10)
        await asyncio.sleep(3 * FAST.stall)  # the batch reader has not read it since (30 s / 8 slices)
        assert ingest.connects == 1 and ingest.errors["stalled"] == 0, ingest.status()
        assert ingest.state == State.STREAMING
    finally:
        await ingest.stop()
        await batch.close()


async def test_all_sessions_share_one_watchdog_timer(h264_camera: str) -> None:
    from mediaserver.rtsp.watchdog import Watchdog

    watchdog = Watchdog.of(asyncio.get_running_loop())
    ingests = [CameraIngest(Hub(f"w{i}"), Source(h264_camera), RateLimiter(100), FAST, Backoff()) for i in range(3)]
    for ingest in ingests:
        ingest.start()
    try:
        await wait_for(lambda: all(i.state == State.STREAMING for i in ingests), 10)
        assert len(watchdog) == 3  # one timer for the loop checks all three sessions
    finally:
        await asyncio.gather(*(i.stop() for i in ingests))
    assert len(watchdog) == 0
