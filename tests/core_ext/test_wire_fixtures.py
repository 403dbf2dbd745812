"""Real gst-rtsp-server byte streams (fixtures/, made by capture_fixtures.py) through the demuxer and
depacketisers, checked against PyAV and ffprobe decoding the resulting Annex-B."""

from __future__ import annotations

import base64
import json
import random
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any, cast

import av
import pytest
from av.video.codeccontext import VideoCodecContext

from core_ext.depacketize import AccessUnit, H264Depacketizer, H265Depacketizer
from core_ext.framing import FramingError, InterleavedDemuxer

FIXTURES = Path(__file__).with_name("fixtures")
META: dict[str, dict[str, Any]] = json.loads((FIXTURES / "fixtures.json").read_text())
AV_CODEC = {"h264": "h264", "h265": "hevc"}


def stream(name: str) -> bytes:
    return (FIXTURES / META[name]["file"]).read_bytes()


def new_demuxer(name: str) -> tuple[InterleavedDemuxer, H264Depacketizer | H265Depacketizer]:
    meta = META[name]
    cls = H264Depacketizer if meta["codec"] == "h264" else H265Depacketizer
    dep = cls(meta["payload_type"])
    dep.set_parameter_sets([base64.b64decode(s) for s in meta["sprop"]])
    demuxer = InterleavedDemuxer()
    demuxer.add_channel(meta["channel"], dep)
    return demuxer, dep


def units(items: list[bytes | AccessUnit]) -> list[AccessUnit]:
    return [i for i in items if isinstance(i, AccessUnit)]


def feed_in_chunks(name: str, seed: int) -> list[bytes | AccessUnit]:
    data = stream(name)
    demuxer, _ = new_demuxer(name)
    rng = random.Random(seed)
    out: list[bytes | AccessUnit] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, rng.randrange(1, 3000), rng.randrange(1, 70000)])
        out += demuxer.feed(data[pos : pos + step])
        pos += step
    return out


def reference_timestamps(data: bytes, channel: int) -> list[int]:
    """Independent pure-Python reading: RTP timestamps of channel packets that carry the marker."""
    marked = []
    pos = 0
    while pos < len(data):
        if data[pos] != 0x24:  # an RTSP message
            head_end = data.index(b"\r\n\r\n", pos) + 4
            length = [ln for ln in data[pos:head_end].lower().split(b"\r\n") if ln.startswith(b"content-length")]
            pos = head_end + (int(length[0].split(b":")[1]) if length else 0)
            continue
        ch, size = struct.unpack_from("!BH", data, pos + 1)
        if ch == channel and data[pos + 5] & 0x80:
            marked.append(struct.unpack_from("!I", data, pos + 8)[0])
        pos += 4 + size
    return marked


def decode_all(codec: str, annexb: bytes) -> list[av.VideoFrame]:
    ctx = cast(VideoCodecContext, av.CodecContext.create(AV_CODEC[codec], "r"))
    frames = []
    for packet in [*ctx.parse(annexb), *ctx.parse(None)]:
        frames += ctx.decode(packet)
    frames += ctx.decode(None)
    return frames


def ffprobe_frames(codec: str, path: Path) -> list[dict[str, Any]]:
    entries = ["-show_entries", "frame=key_frame,width,height", "-of", "json"]
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-f", AV_CODEC[codec], "-show_frames", *entries, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    frames: list[dict[str, Any]] = json.loads(out)["frames"]
    return frames


@pytest.fixture(scope="module", params=sorted(META))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_chunking_does_not_change_the_result(name: str) -> None:
    whole = new_demuxer(name)[0].feed(stream(name))
    expected = [i if isinstance(i, bytes) else (i.pts, i.keyframe, i.data) for i in whole]
    for seed in range(5):
        got = [i if isinstance(i, bytes) else (i.pts, i.keyframe, i.data) for i in feed_in_chunks(name, seed)]
        assert got == expected


def test_units_keyframes_and_messages(name: str) -> None:
    meta = META[name]
    demuxer, dep = new_demuxer(name)
    items = demuxer.feed(stream(name))
    aus = units(items)
    reference = reference_timestamps(stream(name), meta["channel"])
    assert len(aus) == len(reference) > meta["gop"]
    assert [au.pts & 0xFFFFFFFF for au in aus] == reference
    assert all(b - a == 3600 for a, b in zip([au.pts for au in aus], [au.pts for au in aus[1:]], strict=False))
    assert [i for i, au in enumerate(aus) if au.keyframe] == list(range(0, len(aus), meta["gop"]))
    # the PLAY response and the GET_PARAMETER response sent half-way, between `$` frames
    messages = [i for i in items if isinstance(i, bytes)]
    assert [m.split(b"\r\n")[0] for m in messages] == [b"RTSP/1.0 200 OK"] * 2
    assert messages.index(messages[1]) == 1 and items.index(messages[1]) > 1
    stats = dep.stats
    assert (stats.lost, stats.discarded_aus, stats.truncated, stats.bad_version) == (0, 0, 0, 0)


def test_decodes_like_ffprobe(name: str, tmp_path: Path) -> None:
    meta = META[name]
    aus = units(new_demuxer(name)[0].feed(stream(name)))
    annexb = b"".join(au.data for au in aus)
    frames = decode_all(meta["codec"], annexb)
    assert len(frames) == len(aus)
    assert {(f.width, f.height) for f in frames} == {(meta["width"], meta["height"])}
    if not shutil.which("ffprobe"):
        pytest.skip("ffprobe not installed (apt-get install ffmpeg)")
    dump = tmp_path / f"{name}.{AV_CODEC[meta['codec']]}"
    dump.write_bytes(annexb)
    probed = ffprobe_frames(meta["codec"], dump)
    assert len(probed) == len(aus)
    assert {(f["width"], f["height"]) for f in probed} == {(meta["width"], meta["height"])}
    assert [f["key_frame"] == 1 for f in probed] == [au.keyframe for au in aus]


def test_every_keyframe_decodes_on_its_own(name: str) -> None:
    meta = META[name]
    keyframes = [au for au in units(new_demuxer(name)[0].feed(stream(name))) if au.keyframe]
    for au in keyframes:
        assert len(decode_all(meta["codec"], au.data)) == 1


def test_sprop_only_stream_needs_the_sdp_parameter_sets() -> None:
    """Without the SDP's sprop-parameter-sets its keyframes carry no SPS/PPS at all."""
    dep = H264Depacketizer(96)
    demuxer = InterleavedDemuxer()
    demuxer.add_channel(0, dep)
    keyframes = [au for au in units(demuxer.feed(stream("h264_sprop_only"))) if au.keyframe]
    assert keyframes and all(b"\x00\x00\x00\x01\x67" not in au.data for au in keyframes)


def frame_offsets(data: bytes) -> list[int]:
    offsets, pos = [], 0
    while pos < len(data):
        if data[pos] == 0x24:
            offsets.append(pos)
            pos += 4 + struct.unpack_from("!H", data, pos + 2)[0]
        else:
            pos = data.index(b"\r\n\r\n", pos) + 4  # the fixtures' messages carry no body
    return offsets


def test_bad_version_packet_is_counted_and_costs_one_unit(name: str) -> None:
    data = bytearray(stream(name))
    offset = [o for o in frame_offsets(bytes(data)) if data[o + 1] == 0][20]
    data[offset + 4] &= 0x3F  # version 0
    demuxer, dep = new_demuxer(name)
    aus = units(demuxer.feed(bytes(data)))
    good = len(units(new_demuxer(name)[0].feed(stream(name))))
    assert dep.stats.bad_version == 1 and dep.stats.lost == 1
    assert good - 2 <= len(aus) < good
    # the dropped packet's AU vanishes or is discarded; the next one is discarded if it had the gap
    assert 1 <= dep.stats.discarded_aus <= good - len(aus)


def test_corrupted_payload_bytes_never_crash(name: str) -> None:
    data = stream(name)
    headers = {o + k for o in frame_offsets(data) for k in range(4)}
    rng = random.Random(1)
    for _ in range(20):
        corrupt = bytearray(data)
        for pos in rng.sample(range(len(data)), 200):
            if pos not in headers and corrupt[pos] not in b"\r\n":
                corrupt[pos] = rng.getrandbits(8)
        demuxer, _ = new_demuxer(name)
        try:
            out = demuxer.feed(bytes(corrupt))
        except FramingError:
            continue  # a corrupted RTSP message start: the caller reconnects
        assert all(au.data.startswith(b"\x00\x00\x00\x01") for au in units(out))


def test_truncated_stream_waits_and_garbage_raises(name: str) -> None:
    data = stream(name)
    cut = frame_offsets(data)[10] + 7
    demuxer, _ = new_demuxer(name)
    demuxer.feed(data[:cut])
    assert demuxer.buffered == 7
    with pytest.raises(FramingError):
        demuxer.feed(b"\x00" * 5000)  # the length field says more is coming; this fills it
        demuxer.feed(b"\xff garbage")
