"""The camera farm (benchmarks/camfarm.py) against real RTSP clients (ffprobe, ffmpeg) and our own ingest."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import count_frames, ffprobe, rtsp_status, with_credentials

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from camfarm_proc import RunningFarm, camfarm
from camfarm_rtsp import Faults
from test_ingest import ingest_for, wait_for

from mediaserver.ingest import CameraIngest, State


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory, peers_available: None) -> Path:
    return tmp_path_factory.mktemp("farmclips")


def farm_args(clip_dir: Path, cameras: int, *extra: str) -> list[str]:
    return ["--port", "0", "--cameras", str(cameras), "--clip-dir", str(clip_dir), "--clip-seconds", "2", *extra]


@pytest.fixture(scope="module")
def h264_farm(clip_dir: Path) -> Iterator[RunningFarm]:
    with camfarm(farm_args(clip_dir, 50)) as farm:
        yield farm


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ffprobe_reads_codec_and_size(h264_farm: RunningFarm, transport: str) -> None:
    probe = ffprobe(h264_farm.url(7), transport)  # type: ignore[arg-type]
    assert (probe.codec, probe.width, probe.height, probe.fps) == ("h264", 640, 360, 15)


def test_h265_over_tcp(clip_dir: Path) -> None:
    with camfarm(farm_args(clip_dir, 2, "--codec", "h265")) as farm:
        probe = ffprobe(farm.url(2), "tcp")
    assert (probe.codec, probe.width, probe.height) == ("hevc", 640, 360)


def test_ffmpeg_reads_every_frame(h264_farm: RunningFarm) -> None:
    count = count_frames(h264_farm.url(3), seconds=2.0, transport="tcp")
    assert count.drops == 0
    assert 29 <= count.frames <= 32  # 15 fps x 2 s


def test_digest_rejects_wrong_credentials(clip_dir: Path) -> None:
    with camfarm(farm_args(clip_dir, 2, "--auth", "digest", "--user", "op", "--password", "s3cret")) as farm:
        url = farm.url(1)
        assert ffprobe(with_credentials(url, "op", "s3cret")).codec == "h264"
        code, stderr = rtsp_status(with_credentials(url, "op", "wrong"))
        assert code != 0 and "401" in stderr


async def test_ingest_holds_50_cameras_without_loss(h264_farm: RunningFarm) -> None:
    ingests = [ingest_for(h264_farm.url(cam)) for cam in range(1, 51)]
    try:
        await wait_for(lambda: all(i.state == State.STREAMING for i, _ in ingests), 10)
        await asyncio.sleep(3)
    finally:
        await asyncio.gather(*(i.stop() for i, _ in ingests))
    for ingest, recorder in ingests:
        assert ingest.errors == {} and ingest.connects == 1
        assert ingest.status()["packets_lost"] == 0 and ingest.rtp_counters() == {}
        assert len(recorder.units) >= 40 and recorder.units[0].keyframe  # >= 3 s at 15 fps


async def test_ingest_over_udp(h264_farm: RunningFarm) -> None:
    ingests = [ingest_for(h264_farm.url(cam), "udp") for cam in range(1, 6)]
    try:
        await wait_for(lambda: all(len(r.units) >= 30 for _, r in ingests), 10)
    finally:
        await asyncio.gather(*(i.stop() for i, _ in ingests))
    for ingest, recorder in ingests:
        assert ingest.errors == {} and ingest.status()["packets_lost"] == 0 and recorder.units[0].keyframe


def only_fault(faults: Faults, mode: str, cams: range) -> int:
    """A camera with exactly this fault (fault fractions pick cameras by hash)."""
    modes = ("drop", "silent", "garbage", "refuse_auth")
    return next(c for c in cams if faults.has(mode, c) and not any(faults.has(m, c) for m in modes if m != mode))


async def test_fault_modes(clip_dir: Path) -> None:
    """One farm, a quarter of its cameras per fault; our ingest sees each fault as documented and a camera
    without faults streams untouched beside them."""
    faults = Faults(drop=0.25, drop_period=3.0, drop_down=1.0, silent=0.25, garbage=0.25, refuse_auth=0.25)
    extra = ("--drop", "0.25:3:1", "--silent", "0.25", "--garbage", "0.25", "--refuse-auth", "0.25")
    with camfarm(farm_args(clip_dir, 60, *extra)) as farm:
        cams = range(1, 61)
        clean = next(c for c in cams if not any(faults.has(m, c) for m in ("drop", "silent", "garbage", "refuse_auth")))
        picked = {mode: only_fault(faults, mode, cams) for mode in ("drop", "silent", "garbage", "refuse_auth")}
        ingests = {mode: ingest_for(farm.url(cam))[0] for mode, cam in {**picked, "clean": clean}.items()}
        try:
            await wait_for(lambda: _faults_seen(ingests), 12)
        finally:
            await asyncio.gather(*(i.stop() for i in ingests.values()))
    assert ingests["clean"].errors == {} and ingests["clean"].status()["packets_lost"] == 0


def _faults_seen(ingests: dict[str, CameraIngest]) -> bool:
    return (
        ingests["drop"].connects >= 2  # dropped, refused for a while, then back
        and ingests["silent"].errors["stalled"] >= 1
        and sum(ingests["garbage"].errors.values()) >= 1
        and ingests["refuse_auth"].errors["auth_failed"] >= 1
        and ingests["clean"].state == State.STREAMING
    )
