"""Process measurements for the ingest benchmarks (ramp.py, ingest_peers.py): CPU and memory of process
trees from /proc, Prometheus text parsing, and the machine description for results files."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")
METRIC_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(entry))
    return out


def tree(roots: Iterable[int]) -> list[int]:
    """The roots and all their live descendants."""
    kids = children_map()
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo += kids.get(pid, [])
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the live processes (children's time is counted while they are alive, as members)."""
    return sum(cpu_by_pid(pids).values())


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """utime + stime of each live process, by pid: a caller that diffs per pid survives processes that die
    and restart between two readings (a sum over the tree would go backwards)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, IndexError, ValueError):
            continue
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat: busy is everything but idle
    and iowait, so it holds softirq time and other people's processes too."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (total - fields[3] - fields[4]) / TICKS, total / TICKS


def stall_us() -> dict[str, int]:
    """Cumulative stall time from the kernel's pressure stall information (µs since boot): `memory_full` is time
    when every runnable task waited on memory (reclaim, a balloon), which stalls farm and server alike; empty
    where the kernel has no PSI."""
    out = {}
    for resource_ in ("cpu", "memory", "io"):
        try:
            with open(f"/proc/pressure/{resource_}") as f:
                for line in f:
                    kind, *fields = line.split()
                    out[f"{resource_}_{kind}"] = int(dict(x.split("=") for x in fields)["total"])
        except (OSError, KeyError, ValueError):
            continue
    return out


@dataclass(frozen=True, slots=True)
class Memory:
    rss: int  # bytes, summed (counts shared pages once per process)
    pss: int  # bytes, proportional set size summed: shared pages split between sharers

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss + other.rss, self.pss + other.pss)


def memory(pids: Iterable[int]) -> Memory:
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                text = f.read()
        except OSError:
            continue
        rss += _kb(text, "Rss") * 1024
        pss += _kb(text, "Pss") * 1024
    return Memory(rss, pss)


def _kb(text: str, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def prometheus(text: str) -> dict[str, dict[str, float]]:
    """{metric: {labels text: value}} from a Prometheus text exposition."""
    out: dict[str, dict[str, float]] = {}
    for name, labels, value in METRIC_LINE.findall(text):
        try:
            out.setdefault(name, {})[labels] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(metrics: dict[str, dict[str, float]], name: str, label: str = "") -> float | None:
    """Sum of a metric over its series (optionally only series whose labels contain `label`); None if absent."""
    series = metrics.get(name)
    if series is None:
        return None
    return sum(v for labels, v in series.items() if label in labels)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    kernel = platform.release()
    return f"{os.cpu_count()} x {model}, {mem:.1f} GiB RAM, Linux {kernel}, Python {platform.python_version()}"


def version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "absent"
