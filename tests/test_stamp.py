"""The wall-clock stamp (benchmarks/lib/stamp.py, benchmarks/lib/stamp.js) and the clock camera."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.peers import SYSTEM_PYTHON, ready_process

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from lib import stamp  # noqa: E402

W, H = 640, 360
STAMPS = [0, 1, 0x80000000, 2**32 - 1, 1_764_000_000_123 % 2**32, 0x5A5A5A5A]


def luma_plane(stamp_ms: int, width: int = W, height: int = H) -> bytes:
    band = stamp.band_rows(stamp_ms, width)
    return band + bytes([stamp.BACKGROUND]) * (width * height - len(band))


def scale_nearest(plane: bytes, width: int, height: int, new_width: int, new_height: int) -> bytes:
    return bytes(
        plane[(y * height // new_height) * width + x * width // new_width]
        for y in range(new_height)
        for x in range(new_width)
    )


@pytest.mark.parametrize("value", STAMPS)
def test_roundtrip(value: int) -> None:
    assert stamp.decode_gray(luma_plane(value), W) == value


def test_stamp_is_taken_mod_2_32_and_age_undoes_the_wrap() -> None:
    now = 1_764_000_000_123
    assert stamp.decode_gray(luma_plane(now - 80), W) == (now - 80) % 2**32
    assert stamp.age_ms((now - 80) % 2**32, now) == 80
    assert stamp.age_ms((now + 5) % 2**32, now) == -5


def test_no_stamp_and_broken_stamp_are_rejected() -> None:
    assert stamp.decode_gray(bytes([stamp.BACKGROUND]) * (W * H), W) is None
    plane = bytearray(luma_plane(0x12345678))
    cell = stamp.cell_size(W)
    for y in range(cell):  # flip data bit 31 in both rows: the CRC no longer matches
        for row in (0, 1):
            start = (row * cell + y) * W + 31 * cell
            plane[start : start + cell] = bytes(255 - b for b in plane[start : start + cell])
    assert stamp.decode_gray(bytes(plane), W) is None


@pytest.mark.parametrize(("width", "height"), [(320, 180), (1280, 720), (853, 480)])
def test_survives_scaling(width: int, height: int) -> None:
    scaled = scale_nearest(luma_plane(0xDEADBEEF), W, H, width, height)
    assert stamp.decode_gray(scaled, width) == 0xDEADBEEF


@pytest.fixture(scope="module")
def compressed_frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[int], bytes]:
    """Stamped frames through libx264 at a low bitrate and back, as 8-bit gray (full range)."""
    values = [(0x10000000 + 40 * i * 997) % 2**32 for i in range(50)]
    chroma = bytes([128]) * (W * H // 2)
    raw = b"".join(luma_plane(v) + chroma for v in values)
    encode = ["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{W}x{H}", "-r", "25"]
    encode += ["-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "150k"]
    h264 = subprocess.run([*encode, "-f", "h264", "-"], input=raw, capture_output=True, check=True, timeout=60).stdout
    decode = ["ffmpeg", "-v", "error", "-f", "h264", "-i", "-", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    gray = subprocess.run(decode, input=h264, capture_output=True, check=True, timeout=60).stdout
    return values, gray


def test_survives_h264_compression(compressed_frames: tuple[list[int], bytes]) -> None:
    values, gray = compressed_frames
    frames = [gray[i * W * H : (i + 1) * W * H] for i in range(len(values))]
    assert [stamp.decode_gray(f, W) for f in frames] == values


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_js_decoder_agrees_with_python(compressed_frames: tuple[list[int], bytes], tmp_path: Path) -> None:
    values, gray = compressed_frames
    frames = tmp_path / "frames.gray"
    frames.write_bytes(gray + bytes([stamp.BACKGROUND]) * (W * H))  # plus one frame without a stamp
    script = f"""
        const {{ decodeStamp, stampAgeMs }} = require({json.dumps(str(BENCHMARKS / "lib" / "stamp.js"))});
        const buf = require("fs").readFileSync({json.dumps(str(frames))});
        const out = [];
        for (let off = 0; off < buf.length; off += {W * H})
          out.push(decodeStamp((x, y) => buf[off + y * {W} + x], {W}));
        out.push(stampAgeMs(4294967290, 2 ** 32 * 400 + 10), stampAgeMs(10, 2 ** 32 * 400 + 5));
        console.log(JSON.stringify(out));
    """
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(out) == [*values, None, 16, -5]


@pytest.fixture(scope="module")
def clock_camera(peers_available: None) -> Iterator[str]:
    script = BENCHMARKS / "clock_camera.py"
    with ready_process([SYSTEM_PYTHON, str(script), "--port", "0", "--gop", "25"]) as base:
        yield f"{base}/clock"


def test_clock_camera_frames_carry_a_fresh_wall_clock(clock_camera: str) -> None:
    # ffmpeg buffers ~1 s while it probes the stream, so judge the frames after the first 2 s.
    args = ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-timeout", "10000000",
            "-i", clock_camera, "-t", "5"]  # fmt: skip
    proc = subprocess.Popen([*args, "-f", "rawvideo", "-pix_fmt", "gray", "-"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    deadline = threading.Timer(60, proc.kill)  # a stalled stream ends the read (and fails below), never hangs it
    deadline.start()
    ages: list[int | None] = []
    try:
        while len(frame := proc.stdout.read(W * H)) == W * H:
            value = stamp.decode_gray(frame, W)
            ages.append(None if value is None else stamp.age_ms(value, time.time_ns() // 1_000_000))
    finally:
        deadline.cancel()
        proc.kill()
        proc.wait()
    assert len(ages) >= 120
    assert None not in ages
    steady = sorted(a for a in ages[50:] if a is not None)
    assert 0 <= steady[0] and steady[len(steady) // 2] < 300, steady
