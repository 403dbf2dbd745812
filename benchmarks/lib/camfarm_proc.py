"""Start a camera farm (camfarm.py) as a child process and know its cameras: for tests and benchmarks."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CAMFARM = Path(__file__).resolve().parent.parent / "camfarm.py"


@dataclass
class RunningFarm:
    proc: subprocess.Popen[bytes]
    bases: dict[range, str] = field(default_factory=dict)  # camera range -> rtsp://host:port
    info: str = ""  # the READY ALL line
    pids: list[int] = field(default_factory=list)  # the serving processes (the parent only waits)
    stats: dict[int, dict[str, float]] = field(default_factory=dict)  # latest STATS line per farm process

    def stat(self, key: str) -> float:
        """A STATS counter summed over the farm's processes (0 without `--stats`)."""
        return sum(s.get(key, 0) for s in self.stats.values())

    def url(self, cam: int) -> str:
        for cams, base in self.bases.items():
            if cam in cams:
                return f"{base}/cam{cam}"
        raise KeyError(cam)

    @property
    def all_pids(self) -> list[int]:
        return [self.proc.pid, *self.pids]


def python_die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _lines(fd: int, buffer: bytearray, deadline: float | None) -> Iterator[str]:
    """Lines from a pipe read with os.read (a buffered readline after select() can sit on a second line that
    select() will never report); stops at EOF or the deadline."""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end]).decode(errors="replace").strip()
                del buffer[: end + 1]
                yield line
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buffer += chunk


def _read_ready(proc: subprocess.Popen[bytes], farm: RunningFarm, log: Path, timeout: float) -> bytearray:
    """Read READY lines until READY ALL; returns what was read beyond it."""
    assert proc.stdout is not None
    buffer = bytearray()
    for line in _lines(proc.stdout.fileno(), buffer, time.monotonic() + timeout):
        if line.startswith("READY ALL"):
            farm.info = line
            farm.pids = [int(p) for p in line.rsplit("pids=", 1)[1].split(",")]
            return buffer
        if line.startswith("READY "):
            url, span = line.split()[1:3]
            first, last = (int(x) for x in span.split("-"))
            farm.bases[range(first, last + 1)] = url.rsplit("/", 1)[0]
    proc.kill()
    raise RuntimeError(f"camfarm not ready after {timeout}s: {log.read_text()[-2000:]}")


def _drain_stats(proc: subprocess.Popen[bytes], farm: RunningFarm, buffer: bytearray) -> None:
    assert proc.stdout is not None
    with contextlib.suppress(OSError, ValueError):
        for line in _lines(proc.stdout.fileno(), buffer, None):
            if line.startswith("STATS "):
                stats = json.loads(line[6:])
                farm.stats[int(stats["proc"])] = stats


@contextlib.contextmanager
def camfarm(args: list[str], timeout: float = 120.0, python: str = sys.executable) -> Iterator[RunningFarm]:
    """Run camfarm.py with `args` (add `--port 0` for free ports); stops it on exit. With `--stats S` the
    latest STATS line of each farm process is in `farm.stats`."""
    with tempfile.NamedTemporaryFile(prefix="camfarm-", suffix=".log", delete=False) as log_file:
        log = Path(log_file.name)
        proc = subprocess.Popen(
            [python, str(CAMFARM), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            preexec_fn=python_die_with_parent,
        )
    farm = RunningFarm(proc)
    try:
        rest = _read_ready(proc, farm, log, timeout)
        # Keep reading stdout: with --stats the farm would otherwise block on a full pipe.
        threading.Thread(target=_drain_stats, args=(proc, farm, rest), daemon=True).start()
        yield farm
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.unlink(missing_ok=True)
