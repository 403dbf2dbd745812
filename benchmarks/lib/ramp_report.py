"""The ramp benchmark's results file (Markdown) and plot (PNG, matplotlib)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ramp import Step


def per_thousand(value: float, cameras: int) -> float:
    return value * 1000 / cameras if cameras else 0.0


def report(
    results: list[Step], args: argparse.Namespace, argv: list[str], farm: str, machine: str, png: str, load: str = "?"
) -> str:
    held = [s.cameras for s in results if s.held]
    best = max(held, default=0)
    short = args.window < 600
    lines = [
        f"# Ramp: always-on cameras held with 0 lost packets{' (SHORT RUN)' if short else ''}",
        "",
        f"- machine: {machine}",
        f"- load average at start: {load}",
        f"- command: `.venv/bin/python benchmarks/ramp.py {shlex.join(argv)}`",
        f"- farm: {farm}",
        f"- window per step: {args.window:g} s"
        + (
            " — shorter than the issue's 10 minutes: the full run is `benchmarks/ramp.py` with defaults"
            if short
            else ""
        ),
        f"- **cameras held with 0 lost packets: {best}** (every camera streaming throughout the window, 0 RTP"
        " packets lost, >= 97 % of the frames the cameras sent received)",
        "",
        "| cameras | settle s | streaming (min) | server CPU % | per 1k cams | farm CPU % | server RSS MiB | PSS MiB |"
        " PSS per 1k | frames rx | frames expected | packets lost | reconnects | RTSP errors since start |"
        " farm late ticks / skipped frames | memory stall ms | machine CPU % | source |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results:
        lines.append(
            f"| {s.cameras} | {s.settle_s} | {s.streaming_min} | {s.server_cpu} | "
            f"{per_thousand(s.server_cpu, s.cameras):.1f} | {s.farm_cpu} | {s.rss_mib} | {s.pss_mib} | "
            f"{per_thousand(s.pss_mib, s.cameras):.0f} | {s.frames} | {s.expected_frames} | {s.lost} | "
            f"{s.reconnects} | {_kinds(s.errors)} | {s.farm_late} / {s.farm_skipped} | {s.memory_stall_ms} | "
            f"{s.machine_cpu} | {s.source} |"
        )
    for s in results:
        if s.timeline and not s.held:
            points = "; ".join(
                f"{t:g} s: {up} up, {lost} lost, farm {late}/{sk}, stall {ms} ms"
                for t, up, lost, late, sk, ms in s.timeline
            )
            lines += ["", f"{s.cameras} cameras, during the window (streaming, packets lost so far, farm late ticks / "
                      f"skipped frames so far, machine-wide memory stall so far): {points}"]  # fmt: skip
    lines += [
        "",
        "CPU is % of one core (the machine has the number of cores above); the server's figure sums the front and",
        "every worker process; 'machine CPU' is everything busy on the machine (softirq and other users included).",
        "'frames expected' is cameras x fps x window; frames rx comes from the server's",
        "goldentime_frames_total. -1 means the server did not expose the counter.",
        "",
        f"![ramp]({png})",
        "",
    ]
    return "\n".join(lines)


def _kinds(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "-"


def plot(results: list[Step], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = [s.cameras for s in results]
    fig, (cpu, mem, loss) = plt.subplots(3, 1, figsize=(7, 9), sharex=True)
    cpu.plot(cams, [s.server_cpu for s in results], "o-", label="server")
    cpu.plot(cams, [s.farm_cpu for s in results], "s--", label="camera farm")
    cpu.set_ylabel("CPU, % of one core")
    cpu.legend()
    mem.plot(cams, [s.rss_mib for s in results], "o-", label="RSS")
    mem.plot(cams, [s.pss_mib for s in results], "s--", label="PSS")
    mem.set_ylabel("server memory, MiB")
    mem.legend()
    loss.plot(cams, [max(s.lost, 0) for s in results], "o-", label="packets lost")
    loss.plot(cams, [s.cameras - s.streaming_min for s in results], "s--", label="cameras not streaming")
    missing = [100 * (1 - s.frames / s.expected_frames) if s.frames >= 0 and s.expected_frames else 0 for s in results]
    loss.plot(cams, missing, "^:", label="% of frames not received")
    loss.set_ylabel("during the window")
    loss.set_yscale("symlog")
    loss.set_xlabel("cameras")
    loss.legend()
    for ax in (cpu, mem, loss):
        ax.grid(True, alpha=0.3)
    fig.suptitle("Goldentime ramp: 15 fps H.264 cameras over RTSP/TCP")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
