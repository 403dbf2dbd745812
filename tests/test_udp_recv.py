"""RTP over UDP read many datagrams per system call (core_ext/udprecv.pyx, rtsp/udp.py `UdpRtp`):
against gst-rtsp-server and ffmpeg, with foreign senders (another address, another port of the camera's
address, another SSRC) and garbage datagrams on the camera's RTP port, and through the batch reader while
nobody watches."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from helpers.peers import count_frames
from test_ingest import decode, ingest_for, wait_for

from core_ext.depacketize import H264Depacketizer
from core_ext.gop import GopCache
from core_ext.udprecv import BATCH_SIZE, UdpReceiver
from mediaserver.hub import Unit
from mediaserver.ingest import CameraIngest, State
from mediaserver.registry import make_camera
from mediaserver.worker import Worker, WorkerSettings

TICKS_25FPS = 90000 // 25
SPS, PPS = b"\x67\x42\xc0\x1e\xd9\x00\xa0\x47\xfe\xc8", b"\x68\xcb\x83\xcb\x20"


def rtp(seq: int, ts: int, payload: bytes, marker: bool = True, pt: int = 96, first: int = 0x80) -> bytes:
    return struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, 0x1234) + payload


def assert_contiguous(units: list[Unit]) -> None:
    """Every picture between the first and the last arrived: one 25 fps step between neighbours, no gap."""
    steps = [b.pts - a.pts for a, b in itertools.pairwise(units)]
    assert set(steps) == {TICKS_25FPS}, sorted(set(steps))


def stream_seconds(units: list[Unit]) -> float:
    return (units[-1].pts - units[0].pts) / 90000 if units else 0.0


async def streaming(ingest: CameraIngest) -> tuple[str, int]:
    await wait_for(lambda: ingest.state == State.STREAMING and ingest.hub.units > 0, 10)
    assert ingest.client is not None and ingest.client.rtp_address is not None
    return ingest.client.rtp_address


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking receiving socket on 127.0.0.1 and a sender on 127.0.0.1."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx.bind(("127.0.0.1", 0))
    yield rx, tx
    rx.close()
    tx.close()


# --- the receiver on its own (real sockets, synthetic RTP) ---------------------------------------------


def test_drain_takes_a_batch_per_call_and_stops_at_the_limit(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = udp_pair
    receiver = UdpReceiver(rx.fileno(), H264Depacketizer(payload_type=96), "127.0.0.1")
    for seq in range(200):  # one single-NAL picture per datagram
        tx.sendto(rtp(seq, seq * TICKS_25FPS, b"\x65" + bytes(100)), rx.getsockname())
    first = receiver.drain(limit=100)
    assert (len(first), receiver.datagrams, receiver.reads) == (100, 100, 2)  # 64 + 36, the rest stays queued
    rest = receiver.drain()
    assert len(rest) == 100 and receiver.datagrams == 200
    assert receiver.reads == 2 + -(-100 // BATCH_SIZE)  # a short batch says the queue is dry: no EAGAIN call
    assert [u.pts for u in first + rest] == [seq * TICKS_25FPS for seq in range(200)]
    assert receiver.drain() == [] and receiver.reads == 5  # empty socket: one call, EAGAIN
    receiver.close()
    tx.sendto(rtp(200, 0, b"\x65"), rx.getsockname())
    assert receiver.drain() == [] and receiver.fd == -1 and receiver.reads == 5  # closed: never reads again


def test_an_unwatched_cameras_frames_go_to_its_cache_in_order(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    """With the hub's cache as the only consumer, pictures continuing a cached GOP stay in C, keyframes too when
    they begin with their parameter sets. The session's first keyframe goes to Python (which vets and publishes it),
    as does one without parameter sets (which Python drops), and everything after either in the same drain, so the
    cache never sees pictures out of order. With a consumer, everything goes to Python."""
    rx, tx = udp_pair
    cache = GopCache(1 << 20, 100)
    receiver = UdpReceiver(rx.fileno(), H264Depacketizer(payload_type=96), "127.0.0.1", cache=cache)
    cache.direct = True
    seq = itertools.count()

    def send(*kinds: int) -> None:
        for kind in kinds:
            n = next(seq)
            tx.sendto(rtp(n, n * TICKS_25FPS, bytes([kind]) + bytes(100)), rx.getsockname())

    send(0x41, 0x41)
    assert [u.keyframe for u in receiver.drain()] == [False, False]  # no GOP cached yet: nothing to continue
    send(0x65, 0x41, 0x41)
    units = receiver.drain()
    assert [u.keyframe for u in units] == [True, False, False] and len(cache) == 0
    for unit in units:  # what Hub.publish does with them
        cache.add(unit, 0.0)
    send(0x41, 0x41, 0x41)
    assert receiver.drain() == [] and len(cache) == 6 and cache.units == 6
    assert [u.pts // TICKS_25FPS for u in cache.snapshot()] == [2, 3, 4, 5, 6, 7]
    assert cache.last_unit_at > 0 and cache.bytes == 6 * 105  # start code + NAL
    send(0x65, 0x41)  # no parameter sets known (none in an SDP, none in-band): Python's to drop
    assert [u.keyframe for u in receiver.drain()] == [True, False] and len(cache) == 6
    receiver.depacketizer.set_parameter_sets([SPS, PPS])  # now the depacketiser puts them before each IDR
    send(0x41, 0x65, 0x41)
    assert receiver.drain() == [] and len(cache) == 2 and cache.keyframes == 2 and cache.units == 9
    cache.direct = False  # a viewer came
    send(0x41)
    assert len(receiver.drain()) == 1 and len(cache) == 2


def test_rtp_only_from_the_pinned_port_and_ssrc(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    """SETUP's `server_port` and `ssrc` pin the sender: another port of the camera's own address, or the right port
    with another SSRC, is dropped before RTP parsing (issue 15 item 14: only the address was checked)."""
    rx, camera = udp_pair
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as neighbour:
        neighbour.bind(("127.0.0.1", 0))  # the camera's address, another port: another process on its host
        receiver = UdpReceiver(rx.fileno(), H264Depacketizer(payload_type=96), "127.0.0.1")
        receiver.pin(camera.getsockname()[1], 0x1234)
        neighbour.sendto(rtp(1, 0, b"\x65NEIGHBOUR"), rx.getsockname())
        camera.sendto(rtp(2, 0, b"\x65SPOOF")[:8] + struct.pack("!I", 0x9999) + b"\x65SPOOF", rx.getsockname())
        camera.sendto(rtp(3, 0, b"\x65CAMERA"), rx.getsockname())
        units = receiver.drain()
    assert [u.data[-6:] for u in units] == [b"CAMERA"]
    assert (receiver.datagrams, receiver.foreign, receiver.foreign_ssrc) == (1, 1, 1)
    assert (receiver.source_port, receiver.ssrc) == (camera.getsockname()[1], 0x1234)


def test_without_setup_values_the_first_port_and_ssrc_are_latched(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, camera = udp_pair
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as neighbour:
        neighbour.bind(("127.0.0.1", 0))
        receiver = UdpReceiver(rx.fileno(), H264Depacketizer(payload_type=96), "127.0.0.1")
        assert (receiver.source_port, receiver.ssrc) == (None, None)
        camera.sendto(rtp(1, 0, b"\x65A"), rx.getsockname())  # first: latched (SSRC 0x1234)
        neighbour.sendto(rtp(2, 3600, b"\x65B"), rx.getsockname())
        camera.sendto(rtp(3, 7200, b"\x65C")[:8] + struct.pack("!I", 7) + b"\x65C", rx.getsockname())
        camera.sendto(b"\x80", rx.getsockname())  # too short for an SSRC: the depacketiser's to count
        camera.sendto(rtp(2, 10800, b"\x65D"), rx.getsockname())  # seq follows A: no loss
        units = receiver.drain()
    assert [u.data[-1:] for u in units] == [b"A", b"D"]
    assert (receiver.foreign, receiver.foreign_ssrc, receiver.depacketizer.stats.truncated) == (1, 1, 1)
    assert (receiver.source_port, receiver.ssrc) == (camera.getsockname()[1], 0x1234)
    with pytest.raises(ValueError):
        receiver.pin(70000, None)


def test_garbage_from_the_cameras_port_lands_in_the_rtp_counters(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    """Past the address, port and SSRC checks, garbage is the depacketiser's to count (only RTP v2 has an SSRC to
    check: another version is bad_version, not a foreign sender)."""
    rx, camera = udp_pair
    receiver = UdpReceiver(rx.fileno(), H264Depacketizer(payload_type=96), "127.0.0.1")
    receiver.pin(camera.getsockname()[1], 0x1234)
    want: dict[str, int] = {}
    for datagram, counter in garbage():
        camera.sendto(datagram, rx.getsockname())
        want[counter] = want.get(counter, 0) + 1
    assert receiver.drain() == []
    stats = receiver.depacketizer.stats
    assert {name: getattr(stats, name) for name in want} == want
    assert (receiver.foreign, receiver.foreign_ssrc) == (0, 0)


def test_source_filter_ipv6() -> None:
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx.bind(("::1", 0))
        rx.setblocking(False)
        elsewhere = UdpReceiver(rx.fileno(), H264Depacketizer(), "::2")
        here = UdpReceiver(rx.fileno(), H264Depacketizer(), "::1")
        tx.sendto(rtp(1, 0, b"\x65x"), rx.getsockname()[:2])
        tx.sendto(rtp(2, 0, b"\x65x"), rx.getsockname()[:2])
        assert elsewhere.drain(limit=1) == [] and elsewhere.foreign == 1
        assert len(here.drain()) == 1 and (here.datagrams, here.foreign) == (1, 0)
    finally:
        rx.close()
        tx.close()
    with pytest.raises(ValueError):
        UdpReceiver(0, H264Depacketizer(), "camera.example")


# --- our ingest over UDP against gst-rtsp-server -------------------------------------------------------


@pytest.mark.parametrize("camera", ["h264_camera", "sliced_h264_camera"])
async def test_every_frame_arrives(camera: str, request: pytest.FixtureRequest) -> None:
    """Over 4 s of stream time we get as many pictures as ffmpeg (-rtsp_transport udp, decoding) reads from
    the camera, with no gap, and they all decode. (One after the other: while another client shares the
    camera's media, ffmpeg's own count over UDP comes out ~20 % short.)"""
    url = request.getfixturevalue(camera)
    counted = await asyncio.to_thread(count_frames, url, 4.0, "udp", True)
    ingest, recorder = ingest_for(url, "udp")
    try:
        await wait_for(lambda: stream_seconds(recorder.units) >= 4.2, 10)
    finally:
        await ingest.stop()
    units = recorder.units
    assert units[0].keyframe
    assert_contiguous(units)
    first_4s = [u for u in units if u.pts - units[0].pts < 4 * 90000]
    assert counted.drops == 0 and abs(len(first_4s) - counted.frames) <= 1, (len(first_4s), counted)
    assert len(decode(units, "h264")) >= len(units) - 2
    assert ingest.errors == {} and ingest.rtp_counters() == {}


async def intruders_are_dropped(camera: str, source: str, forge: Callable[[int | None], bytes]) -> None:
    """50 datagrams `forge(camera's ssrc)` from `source` while the camera streams: counted as foreign, none reaches
    a unit, the camera's own stream goes on undisturbed."""
    ingest, recorder = ingest_for(camera, "udp")
    try:
        rtp_address = await streaming(ingest)
        receiver = ingest.client.udp_receiver if ingest.client is not None else None
        assert receiver is not None
        assert receiver.source_port is not None and receiver.ssrc is not None  # from SETUP or the first datagram
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
            intruder.bind((source, 0))
            for _ in range(50):
                intruder.sendto(forge(receiver.ssrc), rtp_address)
                await asyncio.sleep(0.01)
        await wait_for(lambda: stream_seconds(recorder.units) >= 2.0, 10)
    finally:
        await ingest.stop()
    assert ingest.rtp_counters() == {"foreign_datagrams": 50}
    assert ingest.errors == {} and ingest.connects == 1
    assert_contiguous(recorder.units)
    assert not any(b"INTRUDER" in u.data for u in recorder.units)


def intruder_rtp(ssrc: int | None = None) -> bytes:
    """Well-formed RTP of the camera's payload type (with the camera's SSRC when given)."""
    packet = rtp(random.randrange(65536), random.randrange(1 << 32), b"\x65INTRUDER")
    return packet if ssrc is None else packet[:8] + struct.pack("!I", ssrc) + packet[12:]


async def test_foreign_sender_is_counted_and_dropped(h264_camera: str) -> None:
    """Well-formed RTP of the camera's payload type from another address would wreck the sequence and
    inject pictures if it were let through."""
    await intruders_are_dropped(h264_camera, "127.0.0.2", lambda ssrc: intruder_rtp())


async def test_another_port_of_the_cameras_address_is_dropped(h264_camera: str) -> None:
    """Well-formed RTP from the camera's own address but not its RTP port (SETUP's server_port) used to pass."""
    await intruders_are_dropped(h264_camera, "127.0.0.1", intruder_rtp)


async def send_bad(rtp_address: tuple[str, int], rounds: int = 3, foreign: int = 0) -> dict[str, int]:
    """Garbage from the camera's address (another port: dropped by the port pin before RTP parsing; garbage from
    the camera's own port is test_garbage_from_the_cameras_port_lands_in_the_rtp_counters) and well-formed RTP from
    another address; returns the counters they must land in."""
    want: dict[str, int] = {"foreign_datagrams": foreign} if foreign else {}
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder,
    ):
        sender.bind(("127.0.0.1", 0))  # the camera's address, not its port
        intruder.bind(("127.0.0.2", 0))
        for i in range(max(rounds, foreign)):
            if i < rounds:
                for datagram, _ in garbage():
                    sender.sendto(datagram, rtp_address)
                    want["foreign_datagrams"] = want.get("foreign_datagrams", 0) + 1
            if i < foreign:
                intruder.sendto(rtp(random.randrange(65536), i, b"\x65INTRUDER"), rtp_address)
            await asyncio.sleep(0.05)
    return want


def garbage() -> list[tuple[bytes, str]]:
    """(datagram, the RTP counter it must land in)."""
    noise = random.Random(4)
    return [
        (b"", "truncated"),
        (b"\x80", "truncated"),
        (rtp(1, 0, b"")[:11], "truncated"),
        (bytes([0x8F]) + rtp(1, 0, b"")[1:], "truncated"),  # claims 15 CSRCs it does not carry
        (bytes(65507), "bad_version"),  # the largest datagram IPv4 carries, all zero
        (bytes([0x40]) + noise.randbytes(900), "bad_version"),
        (rtp(1, 0, b"\x65abc\x00", first=0xA0), "bad_padding"),  # padding length 0
        (rtp(1, 0, b"\x65abc", pt=0), "bad_payload_type"),
    ]


async def test_garbage_is_counted_and_the_camera_and_others_carry_on(h264_camera: str, h265_camera: str) -> None:
    ingest, recorder = ingest_for(h264_camera, "udp")
    other, other_recorder = ingest_for(h265_camera, "udp")
    try:
        rtp_address = await streaming(ingest)
        await streaming(other)
        want = await send_bad(rtp_address)
        await wait_for(lambda: stream_seconds(recorder.units) >= 2.0, 10)
    finally:
        await asyncio.gather(ingest.stop(), other.stop())
    assert dict(ingest.rtp_counters()) == want
    assert ingest.errors == {} and ingest.connects == 1 and ingest.status()["packets_lost"] == 0
    assert_contiguous(recorder.units)
    assert len(decode(recorder.units, "h264")) >= len(recorder.units) - 2
    assert other.errors == {} and other.rtp_counters() == {} and len(other_recorder.units) >= 40


# --- watched vs idle: the batch reader -----------------------------------------------------------------


async def rates(worker: Worker, camera_id: str, seconds: float = 1.5) -> tuple[float, float]:
    """(socket reads/s, pictures/s) of one camera."""
    ingest, hub = worker.ingests[camera_id], worker.hubs[camera_id]
    reads, units = ingest.socket_reads(), hub.units
    await asyncio.sleep(seconds)
    return (ingest.socket_reads() - reads) / seconds, (hub.units - units) / seconds


async def test_idle_camera_is_read_by_the_batch_timer_watched_one_at_once(h264_camera: str) -> None:
    """Unwatched, the camera leaves the event loop and costs ~one recvmmsg per 100 ms tick yet delivers every
    picture; watched, it is read as datagrams come; unwatched again, it goes back to the batch."""
    worker = Worker(WorkerSettings(transport="udp", idle_read_interval=0.1))
    worker.add_camera(make_camera("cam", "cam", "", 37.5, 127.0, h264_camera))
    try:
        await streaming(worker.ingests["cam"])
        await asyncio.sleep(0.3)
        assert worker.batch is not None and len(worker.batch) == 1
        idle_reads, idle_fps = await rates(worker, "cam")
        subscription = worker.hubs["cam"].subscribe()
        await asyncio.sleep(0.3)  # leaves the batch at its next tick
        assert len(worker.batch) == 0
        live_reads, live_fps = await rates(worker, "cam")
        subscription.close()
        await asyncio.sleep(0.3)
        assert len(worker.batch) == 1 and worker.ingests["cam"].state == State.STREAMING
        again_reads, again_fps = await rates(worker, "cam")
        print(f"reads/s idle {idle_reads:.1f} watched {live_reads:.1f} idle again {again_reads:.1f}; "
              f"pictures/s {idle_fps:.1f} / {live_fps:.1f} / {again_fps:.1f}")  # fmt: skip
        ingest = worker.ingests["cam"]
    finally:
        await worker.stop()
    assert idle_reads <= 12 and again_reads <= 12, (idle_reads, again_reads)  # 10 ticks/s
    assert live_reads >= 24, live_reads  # at least a wake-up per picture
    assert all(22 <= fps <= 28 for fps in (idle_fps, live_fps, again_fps)), (idle_fps, live_fps, again_fps)
    assert ingest.errors == {} and ingest.rtp_counters() == {} and ingest.connects == 1


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_batched_camera_is_brought_to_the_present_for_a_viewer(transport: str, h264_camera: str) -> None:
    """Read only every 2 s while nobody watches, a camera still gives a viewer the present: taking its GOP reads it
    first, and a subscriber gets pictures at once, not at the next batch. Meanwhile only the session's first keyframe
    crosses into Python (the receiver or demuxer caches the rest itself), yet the hub counts and caches every
    picture."""
    worker = Worker(WorkerSettings(transport=transport, idle_read_interval=2.0))
    worker.add_camera(make_camera("cam", "cam", "", 37.5, 127.0, h264_camera))
    hub = worker.hubs["cam"]
    published: list[Unit] = []
    publish = hub.put

    def counting(unit: Unit) -> None:
        published.append(unit)
        publish(unit)

    hub.put = counting  # type: ignore[method-assign]  # before the session starts: it binds its sink's put
    ingest = worker.ingests["cam"]
    try:
        await wait_for(lambda: ingest.state == State.STREAMING and hub.units > 0, 10)
        await wait_for(lambda: worker.batch is not None and len(worker.batch) == 1, 5)
        await asyncio.sleep(2.5)  # batched for a while: over UDP, how many pictures crossed into Python?
        crossed, counted = len(published), hub.units
        await asyncio.sleep(0.3)
        before = hub.units
        gop = hub.gop()
        fresh = hub.units - before
        subscription = hub.subscribe()
        live = len(worker.batch or ())
        await asyncio.sleep(0.3)
        arrived = len(subscription.drain())
        subscription.close()
    finally:
        await worker.stop()
    assert fresh >= 5 and gop, fresh  # the 0.3 s of pictures since the last batch, read for the GOP
    assert live == 0 and arrived >= 5, (live, arrived)  # went live at once: 0.3 s of pictures, not 0 until 2 s
    assert counted >= 40 and crossed <= 10, (crossed, counted)  # the first keyframe's read; then none


async def test_idle_cameras_keep_bad_datagrams_and_a_failed_socket_to_themselves(
    h264_camera: str, h265_camera: str
) -> None:
    """Through the batch reader (both cameras idle, drained in one call per tick): garbage and a foreign
    sender at one camera are counted and dropped; then its socket fails (its fd becomes a pipe's: ENOTSOCK),
    which costs it one reconnect. The other camera in the same batch never notices."""
    worker = Worker(WorkerSettings(transport="udp", idle_read_interval=0.1))
    worker.add_camera(make_camera("cam", "cam", "", 37.5, 127.0, h264_camera))
    worker.add_camera(make_camera("other", "other", "", 37.5, 127.0, h265_camera))
    cam, other = worker.ingests["cam"], worker.ingests["other"]
    pipe_r, pipe_w = os.pipe()
    try:
        rtp_address = await streaming(cam)
        await streaming(other)
        await wait_for(lambda: worker.batch is not None and len(worker.batch) == 2, 5)
        want = await send_bad(rtp_address, rounds=3, foreign=20)
        await asyncio.sleep(0.3)  # a few ticks
        counted = dict(cam.rtp_counters())
        batched = len(worker.batch or ())
        assert cam.client is not None and cam.client.udp_receiver is not None
        os.dup2(pipe_r, cam.client.udp_receiver.fd)  # the next tick's recvmmsg fails
        await wait_for(lambda: cam.errors["udp_socket"] >= 1 and cam.state == State.STREAMING, 10)
        other_units = other.hub.units
        await asyncio.sleep(1.0)
        other_rate = other.hub.units - other_units
    finally:
        await worker.stop()
        os.close(pipe_r)
        os.close(pipe_w)
    assert counted == want and batched == 2
    assert cam.errors == {"udp_socket": 1} and cam.connects == 2
    assert other.errors == {} and other.rtp_counters() == {} and other.connects == 1 and 22 <= other_rate <= 28
