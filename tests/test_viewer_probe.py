"""The viewer farm's cheap viewer (benchmarks/viewer_probe.py): its RTP counting on crafted sequences (wrap,
loss, reordering, duplicates, a second SSRC), and against aiortc's own receiver on the same SRTP packets from
the project's egress, with and without losses (real DTLS-SRTP over loopback, a real H.264 clip paced like a
camera)."""

from __future__ import annotations

import asyncio
import struct
import sys
from pathlib import Path

import pytest
from helpers.feed import Unit, clip_camera, make_clip, read_units

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from lib.viewer_probe import ProbeViewer, RtpCounter

from mediaserver.egress import Egress


def rtp(seq: int, marker: bool = False, ssrc: int = 1234, size: int = 100) -> tuple[bytes, int]:
    header = struct.pack("!BBHII", 0x80, 96 | (0x80 if marker else 0), seq & 0xFFFF, 90000, ssrc)
    return header, size


def count(*packets: tuple[bytes, int]) -> RtpCounter:
    counter = RtpCounter()
    for header, size in packets:
        counter.add(header, size)
    return counter


def test_counts_packets_frames_and_bytes_across_the_sequence_wrap() -> None:
    counter = count(*(rtp(65530 + i, marker=i % 3 == 2) for i in range(12)))
    assert (counter.packets, counter.frames, counter.bytes, counter.lost) == (12, 4, 1200, 0)
    assert counter.expected == 12 and counter.cycles == 65536


def test_a_gap_is_lost_until_the_late_packet_arrives_and_a_duplicate_is_not_a_loss() -> None:
    counter = count(rtp(10), rtp(11), rtp(14))
    assert counter.lost == 2
    counter.add(*rtp(12))  # reordered, late
    assert counter.lost == 1 and counter.top == 14
    counter.add(*rtp(11))  # duplicate: RFC 3550 counts it as received
    assert counter.lost == 0


def test_another_ssrc_is_counted_apart() -> None:
    counter = count(rtp(1), rtp(2), rtp(500, ssrc=99))
    assert (counter.packets, counter.other, counter.ssrc) == (2, 1, 1234)


def test_receiver_report_fraction_lost_is_per_interval() -> None:
    counter = count(rtp(0), rtp(3))  # 2 of 4 lost
    first = counter.report()
    assert (first.fraction_lost, first.packets_lost, first.highest_sequence) == (128, 2, 3)
    counter.add(*rtp(4))
    assert counter.report().fraction_lost == 0


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=4, gop=25))


async def test_probe_counts_agree_with_aiortcs_receiver_on_the_same_packets(units: list[Unit]) -> None:
    async with clip_camera("cam1", units) as hub:
        egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
        viewers = [ProbeViewer(tee=True), ProbeViewer(tee=True), ProbeViewer(tee=True, drop_every=37)]
        try:
            for viewer in viewers:
                await viewer.accept((await egress.offer("cam1", await viewer.offer()))[1])
            await asyncio.sleep(3.0)
            for viewer in viewers:
                viewer.frozen = True
            await asyncio.sleep(0.3)  # aiortc finishes the packets handed to it
            for viewer in viewers:
                frames, packets, lost, size = viewer.snapshot()
                aiortc_frames, aiortc_packets, aiortc_lost = viewer.aiortc_counts()
                assert viewer.connected and viewer.counter.errors == 0
                assert frames >= 50 and size > 100_000, (frames, size)  # ~2.5 s of 25 fps at 800 kbit/s
                assert (packets, lost) == (aiortc_packets, aiortc_lost)
                if viewer.drop_every:  # a lasting loss (retransmissions dropped too), the same on both sides
                    assert lost > 0 and viewer.dropped >= lost
                else:
                    assert lost == 0
                    assert frames - 1 <= aiortc_frames <= frames  # aiortc's jitter buffer holds the newest frame
        finally:
            for viewer in viewers:
                await viewer.close()
            await egress.close_all()
