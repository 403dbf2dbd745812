"""core_ext.fanout and mediaserver/fanout.py: packetised once, per-viewer header + SRTP + sendmmsg, NACK history,
and several real aiortc viewers of one camera served by one shared fan-out."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from av import VideoFrame
from helpers.feed import Unit, feed, make_clip, read_units
from helpers.viewers import Viewer
from pylibsrtp import Policy, Session

from core_ext.depacketize import H264Depacketizer
from core_ext.fanout import RtpFrame, RtpOutput, gso_enabled, packetize_h264, send_all, set_gso
from mediaserver import fanout
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from mediaserver.rtc_seam import SRTP_PROTECT, srtp_context

KEY = bytes(range(30))  # AES-128 key + 14-byte salt


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    return read_units(make_clip(tmp_path_factory.mktemp("fanout") / "c.h264", seconds=2, gop=25, size="1280x720"))


def rtp(frame: RtpFrame, seq: int, pt: int = 96) -> Iterator[bytes]:
    """Plain RTP packets for a frame (what a viewer would receive after SRTP)."""
    for i in range(frame.count):
        marker = 0x80 if i == frame.count - 1 else 0
        yield struct.pack("!BBHII", 0x80, pt | marker, (seq + i) & 0xFFFF, frame.pts & 0xFFFFFFFF, 1) + frame.payload(i)


def short_codes(annexb: bytes) -> bytes:
    return annexb.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01")


def test_packetised_frames_depacketise_to_the_same_access_units(units: list[Unit]) -> None:
    depacketizer = H264Depacketizer(96)
    seq, out = 0, []
    for unit in units:
        frame = packetize_h264(unit.data, unit.pts)
        assert all(len(frame.payload(i)) <= 1200 for i in range(frame.count))
        for packet in rtp(frame, seq):
            out += depacketizer.push(packet)
        seq += frame.count
    out += depacketizer.flush()
    assert [(u.pts, u.keyframe) for u in out] == [(u.pts, u.keyframe) for u in units]
    assert all(short_codes(a.data) == short_codes(b.data) for a, b in zip(out, units, strict=True))


def test_parameter_sets_are_aggregated_and_large_units_fragmented_evenly(units: list[Unit]) -> None:
    key = next(u for u in units if u.keyframe)
    frame = packetize_h264(key.data, key.pts)
    assert frame.payload(0)[0] & 0x1F == 24  # STAP-A carrying SPS + PPS
    fu = [frame.payload(i) for i in range(frame.count) if frame.payload(i)[0] & 0x1F == 28]
    assert len(fu) > 2 and fu[0][1] & 0x80 and fu[-1][1] & 0x40  # start and end bits
    sizes = {len(p) for p in fu[:-1]}
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= 1200
    assert packetize_h264(b"\x00\x00\x00\x01\x09\xf0", 0).count == 0  # an access unit delimiter alone: nothing
    with pytest.raises(ValueError):
        packetize_h264(key.data, 0, max_payload=5000)


class Receiver:
    """A UDP socket on loopback that decrypts what a viewer output sends it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        policy = Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        self.srtp = Session(policy)

    def packets(self, n: int) -> list[bytes]:
        return [self.srtp.unprotect(self.sock.recv(2048)) for _ in range(n)]

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


def make_output(sock: socket.socket, port: int, **kw: object) -> RtpOutput:
    policy = Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    policy.allow_repeat_tx = True
    tx = Session(policy)
    ctx = srtp_context(tx)
    out = RtpOutput(0x11223344, 102, first_seq=65534, ts_offset=1000, srtp_ctx=ctx, protect=SRTP_PROTECT, keepalive=tx,
                    **kw)  # type: ignore[arg-type]  # fmt: skip
    out.set_target(sock.fileno(), "127.0.0.1", port)
    return out


@pytest.fixture(params=[True, False], ids=["gso", "no-gso"])
def gso(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Both send modes: equal-size packets as one UDP GSO datagram, and one datagram per packet."""
    before = gso_enabled()
    set_gso(request.param)
    yield request.param
    set_gso(before)


def test_an_output_writes_its_own_header_encrypts_and_answers_nacks(units: list[Unit], gso: bool) -> None:
    rx = Receiver()
    tx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out = make_output(tx_sock, rx.port, rtx_ssrc=0x55667788, rtx_payload_type=103, abs_send_time_id=3, mid_id=4,
                      mid=b"0")  # fmt: skip
    frame = packetize_h264(units[0].data, units[0].pts)
    assert out.send(frame) == frame.count
    got = rx.packets(frame.count)
    for i, packet in enumerate(got):
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
        assert b0 == 0x90 and ssrc == 0x11223344 and ts == 1000 + units[0].pts
        assert seq == (65534 + i) & 0xFFFF  # wraps
        assert (b1 & 0x7F, bool(b1 & 0x80)) == (102, i == frame.count - 1)
        assert packet[12:14] == b"\xbe\xde" and packet[16] >> 4 == 3 and packet[20:22] == bytes([0x40]) + b"0"
        assert packet[24:] == frame.payload(i)
    assert (out.packets, out.frames, out.octets) == (frame.count, 1, frame.size)

    assert out.retransmit(65535)  # lost: answered by RTX with the original sequence number first
    [rtx] = rx.packets(1)
    assert rtx[1] & 0x7F == 103 and struct.unpack("!I", rtx[8:12])[0] == 0x55667788
    assert rtx[24:26] == b"\xff\xff" and rtx[26:] == frame.payload(1)
    assert not out.retransmit(1234)  # never sent: nothing to resend
    assert out.retransmitted == 1
    out.close()
    assert out.send(frame) == 0  # closed: sends nothing (its socket may already be gone)


def test_send_all_reaches_every_output_and_reports_a_dead_socket(units: list[Unit], gso: bool) -> None:
    receivers = [Receiver() for _ in range(3)]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in receivers]
    outputs = [make_output(s, r.port) for s, r in zip(socks, receivers, strict=True)]
    frame = packetize_h264(units[1].data, units[1].pts)
    assert send_all(outputs, frame) == []
    for r in receivers:
        assert [p[12:] for p in r.packets(frame.count)] == [frame.payload(i) for i in range(frame.count)]
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = dead.detach()
    outputs[1].set_target(fd, "127.0.0.1", receivers[1].port)
    os.close(fd)  # the viewer's socket is gone: EBADF, reported, the others still served
    assert send_all(outputs, frame) == [outputs[1]]
    assert outputs[1].failed and not outputs[0].failed
    assert len(receivers[2].packets(frame.count)) == frame.count


@pytest.fixture
async def camera(units: list[Unit]) -> AsyncIterator[Hub]:
    hub = Hub("cam1")
    task = asyncio.create_task(feed(hub, units, start=5))
    yield hub
    task.cancel()


async def test_viewers_of_one_camera_share_one_fanout_and_one_packetisation(camera: Hub, tmp_path: Path) -> None:
    egress = Egress({"cam1": camera}.get, ice_hosts=["127.0.0.1"])
    viewers = [Viewer() for _ in range(4)]
    try:
        for v in viewers:
            await v.join(egress, "cam1")
        tracks = [await asyncio.wait_for(v.track, 5) for v in viewers]
        for _ in range(3):  # every viewer decodes pictures
            frames = await asyncio.gather(*(asyncio.wait_for(t.recv(), 5) for t in tracks))
            assert all(isinstance(f, VideoFrame) and f.width == 1280 for f in frames)
        for _ in range(100):
            if all(s["shared_fanout"] for s in egress.sessions):
                break
            await asyncio.sleep(0.05)
        assert all(s["shared_fanout"] for s in egress.sessions), egress.sessions
        assert len(egress.fanout) == 1 and egress.fanout.viewers == 4
        assert camera.subscriber_count >= 4  # the camera counts as watched (read live, not in batches)

        before, units_before = egress.fanout.cache.packetised, camera.units
        await asyncio.sleep(1.0)
        published = camera.units - units_before
        assert published >= 10
        assert egress.fanout.cache.packetised - before <= published + 1  # once per unit, not once per viewer
        assert {s["frames_sent"] for s in egress.sessions} and min(s["frames_sent"] for s in egress.sessions) > 10
    finally:
        for v in viewers:
            await v.pc.close()
        await egress.close_all()
    assert len(egress.fanout) == 0


async def test_removing_the_camera_ends_shared_fanout_sessions(units: list[Unit]) -> None:
    hub = Hub("cam1")
    task = asyncio.create_task(feed(hub, units, start=0))
    egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
    viewer = Viewer()
    try:
        await viewer.join(egress, "cam1")
        track = await asyncio.wait_for(viewer.track, 5)
        await asyncio.wait_for(track.recv(), 5)
        for _ in range(100):
            if egress.sessions and egress.sessions[0]["shared_fanout"]:
                break
            await asyncio.sleep(0.05)
        hub.close()  # the camera was removed from the registry
        for _ in range(100):
            if not egress.sessions:
                break
            await asyncio.sleep(0.05)
        assert egress.sessions == [] and len(egress.fanout) == 0
    finally:
        task.cancel()
        await viewer.pc.close()
        await egress.close_all()


class Member:
    """What a group needs of a viewer's sender."""

    ended = False

    def end(self) -> None:
        self.ended = True


async def test_a_group_sends_large_fanouts_in_order_in_slices_and_skips_a_viewer_that_left(
    units: list[Unit], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "SLICE_PACKETS", 20)  # a few viewers per loop iteration
    hub = Hub("cam1")
    group = fanout.FanoutGroup(hub, fanout.FrameCache(), lambda g: None)
    receivers = [Receiver() for _ in range(12)]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in receivers]
    outputs = [make_output(s, r.port) for s, r in zip(socks, receivers, strict=True)]
    for out in outputs:
        group.add(Member(), out)  # type: ignore[arg-type]
    key = next(i for i, u in enumerate(units) if u.keyframe)
    sent = units[key : key + 3]
    frames = [packetize_h264(u.data, u.pts) for u in sent]
    hub.publish(sent[0])
    assert len(group._backlog) == 1  # only a slice went out at once
    group.remove(outputs[-1])  # leaves before its turn: it must get nothing more
    for unit in sent[1:]:
        hub.publish(unit)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not group._backlog:
            break
    assert not group._backlog
    total = sum(f.count for f in frames)
    for r in receivers[:-1]:
        packets = r.packets(total)
        assert [p[12:] for p in packets] == [f.payload(i) for f in frames for i in range(f.count)]  # in order
    receivers[-1].sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        receivers[-1].sock.recv(2048)
