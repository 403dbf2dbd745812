"""Helpers that start and query real peers (gst-rtsp-server camera, ffprobe, ffmpeg) for the tests.

Everything binds 127.0.0.1 and lets the OS pick ports (the simulated camera runs with `--port 0` and
reports its port on its READY line), so parallel runs never clash. Every child process gets
PR_SET_PDEATHSIG, so it dies with the test process even when pytest is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from mediaserver.simcam import GST_CAMERA, SYSTEM_PYTHON

Auth = Literal["none", "basic", "digest"]
Transport = Literal["tcp", "udp"]
# auth_camera fixture: (method, user, password) -> rtsp URL without credentials
AuthCamera = Callable[[Auth, str, str], str]

APT_HINT = (
    "apt-get install -y ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp "
    "gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0"
)


def missing_peers() -> list[str]:
    """Names of the external programs these helpers need that are not installed."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    probe = [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"]
    if not Path(SYSTEM_PYTHON).exists() or subprocess.run(probe, capture_output=True).returncode:
        missing.append(f"{SYSTEM_PYTHON} with gi + GstRtspServer")
    return missing


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer port 0 where the peer supports it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the child when the test process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def with_credentials(url: str, user: str, password: str) -> str:
    """rtsp://host:port/path -> rtsp://user:password@host:port/path (percent-encoded)."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


# --- simulated camera ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimCam:
    """A running gst_camera.py process."""

    base_url: str  # rtsp://127.0.0.1:PORT
    pid: int
    log: Path  # its stderr

    def url(self, mount: str) -> str:
        return f"{self.base_url}/{mount.lstrip('/')}"


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """Read the READY line from the camera's stdout; raise with its stderr if it never comes."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(left):
                line = proc.stdout.readline().decode(errors="replace").strip()
                if line.startswith("READY "):
                    return line.split(" ", 1)[1]
                if not line and proc.poll() is not None:
                    break
    stop_process(proc)
    raise RuntimeError(f"simulated camera not ready after {timeout}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def simcam(
    mounts: Mapping[str, str | os.PathLike[str]],
    *,
    auth: Auth = "none",
    user: str = "admin",
    password: str = "admin",
    fps: float | None = None,
    timeout: float = 30.0,
) -> Iterator[SimCam]:
    """Run gst_camera.py serving `mounts` ({"cam": clip_path}) on a free 127.0.0.1 port."""
    args = [SYSTEM_PYTHON, str(GST_CAMERA), "--host", "127.0.0.1", "--port", "0", "--auth", auth]
    args += ["--user", user, "--password", password]
    for mount, clip in mounts.items():
        args += ["--mount", f"{mount}={os.fspath(clip)}"]
    if fps is not None:
        args += ["--fps", str(fps)]
    with tempfile.NamedTemporaryFile(prefix="simcam-", suffix=".log", delete=False) as log_file:
        log = Path(log_file.name)
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    try:
        yield SimCam(_wait_ready(proc, log, timeout), proc.pid, log)
    finally:
        stop_process(proc)
        if proc.stdout:
            proc.stdout.close()
        log.unlink(missing_ok=True)


# --- ffprobe / ffmpeg as RTSP clients --------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    codec: str  # ffmpeg's name: "h264", "hevc"
    profile: str
    width: int
    height: int
    fps: float


def ffprobe(url: str, transport: Transport = "tcp", timeout: float = 20.0) -> Probe:
    """Codec, profile, size and frame rate of the first video stream at an RTSP URL."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", transport, "-timeout", "10000000",
         "-select_streams", "v:0", "-show_entries", "stream=codec_name,profile,width,height,r_frame_rate",
         "-of", "default=noprint_wrappers=1", url],
        check=True, capture_output=True, text=True, timeout=timeout,
    ).stdout  # fmt: skip
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    num, _, den = fields["r_frame_rate"].partition("/")
    return Probe(
        codec=fields["codec_name"],
        profile=fields.get("profile", ""),
        width=int(fields["width"]),
        height=int(fields["height"]),
        fps=int(num) / int(den or 1),
    )


def rtsp_status(url: str, transport: Transport = "tcp", timeout: float = 20.0) -> tuple[int, str]:
    """(exit code, stderr) of an ffprobe against `url`; for checks that expect a refusal."""
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", transport, "-timeout", "10000000", url],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return proc.returncode, proc.stderr


@dataclass(frozen=True)
class FrameCount:
    frames: int  # frames read (or decoded, with decode=True)
    drops: int  # ffmpeg's drop_frames
    wall_s: float  # wall-clock time from start to exit, connection set-up included
    stderr: str


def count_frames(
    url: str,
    seconds: float = 4.0,
    transport: Transport = "tcp",
    decode: bool = False,
    timeout: float | None = None,
) -> FrameCount:
    """Read `seconds` of stream time with ffmpeg and report its frame counters."""
    codec = [] if decode else ["-c", "copy"]
    with tempfile.NamedTemporaryFile(prefix="ffprogress-", suffix=".txt") as progress:
        start = time.monotonic()
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", transport, "-timeout", "10000000",
             "-i", url, "-t", str(seconds), *codec, "-f", "null", "-", "-progress", progress.name],
            capture_output=True, text=True, timeout=timeout or seconds + 30,
        )  # fmt: skip
        wall = time.monotonic() - start
        text = Path(progress.name).read_text()
    if proc.returncode:
        raise RuntimeError(f"ffmpeg exited {proc.returncode}: {proc.stderr[-2000:]}")
    return FrameCount(_last_int(text, "frame"), _last_int(text, "drop_frames"), wall, proc.stderr)


def _last_int(progress: str, key: str) -> int:
    values = re.findall(rf"^{key}=(\d+)$", progress, re.MULTILINE)
    return int(values[-1]) if values else 0
