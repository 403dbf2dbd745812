"""Test clips for the simulated camera, made with the ffmpeg CLI (see docs/PEERS.md for the flags).

Importable by the project's Python; needs only `ffmpeg` on PATH.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Literal

Codec = Literal["h264", "h265"]


def clip_name(
    codec: Codec = "h264",
    size: str = "640x360",
    fps: int = 25,
    gop: int = 25,
    seconds: int = 10,
    bitrate: str = "800k",
    slices: int = 1,
) -> str:
    """A file name that encodes every parameter, so cached clips never mix."""
    return f"{codec}_{size}_{fps}fps_g{gop}_{seconds}s_{bitrate}_s{slices}.mp4"


def ffmpeg_args(codec: Codec, size: str, fps: int, gop: int, seconds: int, bitrate: str, slices: int) -> list[str]:
    src = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}", "-t", str(seconds)]
    if codec == "h264":
        enc = [
            "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
            "-preset", "veryfast", "-x264-params", f"slices={slices}:sliced-threads=0",
        ]  # fmt: skip
    elif codec == "h265":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:slices={slices}:log-level=error"
        enc = [
            "-c:v", "libx265", "-pix_fmt", "yuv420p", "-preset", "veryfast",
            "-x265-params", params, "-tag:v", "hvc1",
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return ["ffmpeg", "-v", "error", "-nostdin", "-y", *src, *enc, "-b:v", bitrate, "-an"]


def make_clip(
    path: str | os.PathLike[str],
    codec: Codec = "h264",
    size: str = "640x360",
    fps: int = 25,
    gop: int = 25,
    seconds: int = 10,
    bitrate: str = "800k",
    slices: int = 1,
) -> Path:
    """Encode a testsrc clip to `path` (MP4) unless it already exists; returns the path.

    Written to a temporary name and renamed, so a concurrent or interrupted run never leaves
    a half-written clip behind that later runs would take for a cached one.
    """
    out = Path(path)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.mp4")
    try:
        args = ffmpeg_args(codec, size, fps, gop, seconds, bitrate, slices)
        subprocess.run([*args, str(tmp)], check=True, capture_output=True, timeout=300)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def ensure_clip(
    directory: str | os.PathLike[str],
    codec: Codec = "h264",
    size: str = "640x360",
    fps: int = 25,
    gop: int = 25,
    seconds: int = 10,
    bitrate: str = "800k",
    slices: int = 1,
) -> Path:
    """make_clip() into `directory` under clip_name(); the usual way to get a cached clip."""
    params = (codec, size, fps, gop, seconds, bitrate, slices)
    return make_clip(Path(directory) / clip_name(*params), *params)
