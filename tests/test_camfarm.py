"""The camera farm (benchmarks/camfarm.py) against real RTSP clients (ffprobe, ffmpeg) and our own ingest."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers.peers import RtspConn, count_frames, ffprobe, rtsp_status, with_credentials

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from lib.camfarm_clip import load_clip
from lib.camfarm_proc import RunningFarm, camfarm
from lib.camfarm_rtsp import Faults, Scheduler, Session, Settings
from test_ingest import ingest_for, wait_for

from mediaserver.ingest import CameraIngest, State
from mediaserver.simcam.clips import ensure_clip


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


async def _play(url: str, channel: int = 0) -> tuple[RtspConn, asyncio.StreamWriter, int, int]:
    """SETUP + PLAY over TCP interleaved; returns the connection and RTP-Info's seq and rtptime."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    conn = RtspConn(reader, writer)
    await conn.request("SETUP", f"{url}/track1", Transport=f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}")
    status, fields, _ = await conn.request("PLAY", url, Session="x")
    assert status == 200
    info = dict(p.split("=", 1) for p in fields["rtp-info"].split(";")[1:])
    return conn, writer, int(info["seq"]), int(info["rtptime"])


async def _packets(conn: RtspConn, count: int) -> list[tuple[int, bytes]]:
    return [await conn.read_frame() for _ in range(count)]


async def test_rtp_numbering_is_continuous_per_session(h264_farm: RunningFarm) -> None:
    """Frames are stamped once per clip position for all sessions (camfarm_rtsp.Scheduler): each session still
    starts at a keyframe with the seq/rtptime its RTP-Info announced, on its own channel, and counts on from
    there without a gap; a second session that joins later starts at its own keyframe."""
    url = h264_farm.url(11)
    first = await _play(url)
    await asyncio.sleep(0.3)
    second = await _play(url, channel=4)
    try:
        for (conn, _, seq, rtptime), channel in ((first, 0), (second, 4)):
            packets = await asyncio.wait_for(_packets(conn, 120), 15)
            assert {ch for ch, _ in packets} == {channel}
            rtp = [p for _, p in packets]
            assert int.from_bytes(rtp[0][2:4], "big") == seq and int.from_bytes(rtp[0][4:8], "big") == rtptime
            assert rtp[0][12] & 0x1F == 7  # SPS: the session opens on the clip's keyframe
            seqs = [int.from_bytes(p[2:4], "big") for p in rtp]
            assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
            stamps = sorted({int.from_bytes(p[4:8], "big") for p in rtp})
            assert all(b - a == 6000 for a, b in itertools.pairwise(stamps))  # 90 kHz / 15 fps
            assert len(stamps) >= 10 and len({p[8:12] for p in rtp}) == 1  # one SSRC per session
    finally:
        first[1].close()
        second[1].close()


def test_frames_per_send_keeps_every_frame(clip_dir: Path) -> None:
    """`--frames-per-send 2` writes two frames at once: ffmpeg still gets every frame, in order."""
    with camfarm(farm_args(clip_dir, 4, "--frames-per-send", "2")) as farm:
        count = count_frames(farm.url(2), seconds=2.0, transport="tcp")
    assert count.drops == 0
    assert 28 <= count.frames <= 33


def test_nice_changes_the_serving_processes_priority(clip_dir: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with camfarm(farm_args(clip_dir, 2, "--nice", "3")) as farm:
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in farm.pids] == [min(19, base + 3)]
        assert os.getpriority(os.PRIO_PROCESS, farm.proc.pid) == base  # the parent only waits
        assert ffprobe(farm.url(1)).codec == "h264"


def test_full_socket_skips_whole_frames(clip_dir: Path) -> None:
    """A client that stops reading: the kernel takes part of a frame, the farm finishes that frame before the
    next one and skips the frames it cannot send, so the interleaved stream stays whole (a seq gap, no torn
    packet)."""
    clip = load_clip(ensure_clip(clip_dir, "h264", "640x360", 15, 30, 2, "3000k"))
    settings = Settings("127.0.0.1", clip)
    farm = Scheduler(settings, range(1, 2))
    client, server = socket.socketpair()
    with client, server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.setblocking(False)
        session = Session(farm, settings, None)
        session.cam, session.out, session.playing = 1, server, True
        farm.add(session)
        for n in range(60):
            farm.send_all([session], n)
        assert farm.counters.skipped > 0 and session.pending is not None
        received = bytearray()
        client.setblocking(False)
        for n in range(60, 120):  # now the client reads: the torn frame is finished first
            with contextlib.suppress(BlockingIOError):
                while chunk := client.recv(1 << 16):
                    received += chunk
            farm.send_all([session], n)
        with contextlib.suppress(BlockingIOError):
            while chunk := client.recv(1 << 16):
                received += chunk
    packets = _split_interleaved(bytes(received))
    seqs = [int.from_bytes(p[2:4], "big") for p in packets]
    gaps = [(b - a) % 65536 for a, b in itertools.pairwise(seqs)]
    assert all(p[0] == 0x80 for p in packets)  # every packet starts where its $-header says
    assert max(gaps) > 1 and all(g >= 1 for g in gaps)  # skipped frames show as a gap, never a repeat


def _split_interleaved(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i + 4 <= len(data):
        assert data[i] == 0x24, f"torn stream at byte {i}"
        size = int.from_bytes(data[i + 2 : i + 4], "big")
        if i + 4 + size > len(data):
            break
        out.append(data[i + 4 : i + 4 + size])
        i += 4 + size
    return out


def test_fault_schedule_up_for_matches_down_time() -> None:
    """soak.py predicts which cameras should stream from Faults.up_for: it must agree with what the farm does
    (is_down), and count the seconds since the camera came back."""
    faults = Faults(drop=0.5, drop_period=60.0, drop_down=5.0)
    dropping = [c for c in range(1, 200) if faults.has("drop", c)]
    steady = next(c for c in range(1, 200) if not faults.has("drop", c))
    assert 60 < len(dropping) < 140 and faults.up_for(steady, 0.0) == float("inf")
    for cam in dropping[:20]:
        times = [t / 10 + 0.037 for t in range(1200)]
        for now in times:
            assert (faults.up_for(cam, now) == 0.0) is faults.is_down(cam, now)
        back = next(t for t in times if faults.is_down(cam, t) and not faults.is_down(cam, t + 0.1))
        assert 9.8 < faults.up_for(cam, back + 10.1) <= 10.1
