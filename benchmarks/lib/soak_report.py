"""The soak's results file (Markdown) and plot (PNG), from the lines soak.py printed."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPECTED_FPS = 15
KILL_GOAL_S = 5.0
WARMUP = 0.2  # the slope "after warm-up" leaves out this fraction of the run


@dataclass
class Run:
    meta: dict[str, Any]
    samples: list[dict[str, Any]]
    kill: dict[str, Any] | None = None
    settled: dict[str, Any] = field(default_factory=dict)


def load(lines: list[str]) -> Run:
    records: dict[str, list[Any]] = {}
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind in ("SETUP", "SETTLED", "SAMPLE", "KILL"):
            records.setdefault(kind, []).append(json.loads(rest))
    if "SETUP" not in records:
        raise ValueError("no SETUP line: not a soak.py log")
    kill = records.get("KILL", [None])[0]
    return Run(records["SETUP"][0], records.get("SAMPLE", []), kill, records.get("SETTLED", [{}])[0])


def slope_per_hour(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of y against t (seconds), per hour."""
    n = len(ts)
    if n < 3:
        return None
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 3600 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else None


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:+.1f}{unit}"


def rss_slopes(run: Run) -> dict[str, float | None]:
    """MiB/hour: all server processes over the whole run and after warm-up (RSS, and PSS, which counts shared
    library pages once); the processes never killed after warm-up (a restarted worker starts small again, which a
    sum would read as a drop)."""
    s = list(run.samples)
    if not s:
        return {}
    start = s[-1]["t"] * WARMUP
    late = [x for x in s if x["t"] >= start]
    killed = f"worker-{run.kill['worker']}" if run.kill else None
    kept = [x for x in late if all(k in x["rss_by_process"] for k in _survivors(late, killed))]
    return {
        "RSS of all processes, whole run": slope_per_hour([x["t"] for x in s], [x["rss_mib"] for x in s]),
        "RSS of all processes, after warm-up": slope_per_hour([x["t"] for x in late], [x["rss_mib"] for x in late]),
        "PSS of all processes, after warm-up": slope_per_hour([x["t"] for x in late], [x["pss_mib"] for x in late]),
        "RSS of the processes never killed, after warm-up": slope_per_hour(
            [x["t"] for x in kept], [sum(v for k, v in x["rss_by_process"].items() if k != killed) for x in kept]
        ),
    }


def _survivors(samples: list[dict[str, Any]], killed: str | None) -> set[str]:
    names = set().union(*(x["rss_by_process"] for x in samples)) if samples else set()
    return {n for n in names if n != killed}


def stuck(run: Run) -> list[str]:
    """Cameras that should stream and did not, in each of the last two samples."""
    if len(run.samples) < 2:
        return list(run.samples[-1]["not_up"]) if run.samples else []
    return sorted(set(run.samples[-1]["not_up"]) & set(run.samples[-2]["not_up"]))


def reconnect_peaks(run: Run) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for x in run.samples:
        for worker, rate in x["reconnect_rate"].items():
            peaks[worker] = max(peaks.get(worker, 0.0), rate)
    return peaks


def viewer_fps(run: Run) -> tuple[float | None, float | None, list[tuple[float, float]]]:
    """(min, mean) over every sample and viewer, and (min, mean) per viewer."""
    per: list[list[float]] = []
    for x in run.samples:
        for i, fps in enumerate(x["viewer_fps"]):
            while len(per) <= i:
                per.append([])
            per[i].append(fps)
    flat = [f for series in per for f in series]
    if not flat:
        return None, None, []
    return min(flat), sum(flat) / len(flat), [(min(s), sum(s) / len(s)) for s in per]


def report(run: Run, machine: str, png: str) -> str:
    m = run.meta
    short = m["minutes"] < 30
    slopes = rss_slopes(run)
    left = stuck(run)
    peaks = reconnect_peaks(run)
    fps_min, fps_mean, per_viewer = viewer_fps(run)
    cap = m.get("reconnect_cap")
    first, last = (run.samples[0], run.samples[-1]) if run.samples else ({}, {})
    title = f"# Soak: {m['cameras']} cameras, {m['workers']} workers, {m['minutes']:g} minutes"
    lines = [
        title + (" (SHORT RUN: the issue asks for 30 minutes)" if short else ""),
        "",
        f"- machine: {machine}",
        f"- started: {m.get('started', '?')}; load average at start: {m['load']}",
        f"- command: `.venv/bin/python benchmarks/soak.py {shlex.join(m['argv'])}`",
        f"- farm: {m['farm']}",
        f"- viewers (aiortc, decoding) on never-dropping cameras of the workers not killed: {', '.join(m['viewers'])}",
        f"- settle: every camera that should stream did after {run.settled.get('seconds', '?')} s; cameras per "
        f"worker: {run.settled.get('owners', {})}",
        "",
        "| what | result |",
        "|---|---|",
        f"| server RSS, first / last sample | {first.get('rss_mib', '?')} / {last.get('rss_mib', '?')} MiB "
        f"(PSS {first.get('pss_mib', '?')} / {last.get('pss_mib', '?')}) |",
    ]
    lines += [f"| memory slope, {name} | {_fmt(v, ' MiB/hour')} |" for name, v in slopes.items()]
    lines += [
        f"| stuck cameras at the end (should stream, did not in the last two samples) | {len(left)}"
        f"{': ' + ', '.join(left[:20]) if left else ''} |",
        f"| highest reconnect attempt rate per worker (mean over a {_interval(run)} s sample) | "
        + ", ".join(f"{w} {r:.1f}/s" for w, r in sorted(peaks.items()))
        + f" (cap {cap:g}/s per worker) |"
        if cap
        else f"| highest reconnect attempt rate per worker | {peaks} (cap unknown) |",
        f"| viewer fps, min / mean over the run (camera: {EXPECTED_FPS}) | "
        + ("n/a" if fps_min is None else f"{fps_min:.1f} / {fps_mean:.2f}")
        + (" (per viewer: " + "; ".join(f"{a:.1f} / {b:.2f}" for a, b in per_viewer) + ")" if per_viewer else "")
        + " |",
        f"| kill -9 | {_kill(run.kill)} |",
    ]
    lines += ["", "Per sample (every row; RSS of all server processes, CPU in % of one core):", ""]
    lines += _table(run)
    lines += ["", f"![soak]({png})", ""]
    return "\n".join(lines)


def _interval(run: Run) -> str:
    if len(run.samples) < 2:
        return "?"
    return f"{run.samples[1]['t'] - run.samples[0]['t']:.0f}"


def _kill(kill: dict[str, Any] | None) -> str:
    if not kill:
        return "not run"
    up = "not within the timeout" if kill["worker_up_s"] is None else f"{kill['worker_up_s']:.2f} s"
    back = "NOT within the timeout" if kill["streaming_s"] is None else f"{kill['streaming_s']:.2f} s"
    verdict = ""
    if kill["streaming_s"] is not None:
        verdict = " (goal <= 5 s: met)" if kill["streaming_s"] <= KILL_GOAL_S else " (goal <= 5 s: MISSED)"
    return (
        f"worker {kill['worker']} (pid {kill['pid']}) at t = {kill['t']:.0f} s: the supervisor reports it up after "
        f"{up}; all {kill['watched']} of its never-dropping cameras stream again after {back}{verdict} "
        f"({kill['streaming_before']} streamed just before; {_milestones(kill)})"
    )


def _milestones(kill: dict[str, Any]) -> str:
    """When half, 90 % and all of the watched cameras streamed again, and the rate they came back at."""
    curve, total = kill.get("curve") or [], kill["watched"]
    if not curve or not total:
        return "no recovery curve"
    at = {f: next((t for t, n in curve if n >= f * total), None) for f in (0.5, 0.9, 1.0)}
    first = next((t for t, n in curve if n > 0), None)
    parts = [f"{int(f * 100)} % at {t:.1f} s" for f, t in at.items() if t is not None]
    if first is not None and at[1.0] is not None and at[1.0] > first:
        parts.append(f"~{total / (at[1.0] - first):.0f} cameras/s once the first streamed")
    return ", ".join(parts)


def _table(run: Run) -> list[str]:
    out = ["| t s | RSS MiB | PSS MiB | CPU % | streaming | backoff | connecting | worker_down | should stream | "
           "of those not | reconnects/s by worker | viewer fps | restarts | memory stall ms |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for x in run.samples:
        st = x["states"]
        rates = ", ".join(f"{w.replace('worker-', 'w')} {r:.1f}" for w, r in sorted(x["reconnect_rate"].items()))
        fps = ", ".join(f"{f:.1f}" for f in x["viewer_fps"])
        out.append(
            f"| {x['t']:.0f} | {x['rss_mib']} | {x['pss_mib']} | {x['cpu_pct']} | {st.get('streaming', 0)} | "
            f"{st.get('backoff', 0)} | {st.get('connecting', 0)} | {st.get('worker_down', 0)} | {x['should_up']} | "
            f"{len(x['not_up'])} | {rates} | {fps} | {x['restarts']} | {x.get('stall_ms', -1)} |"
        )
    return out


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run.samples
    t = [x["t"] / 60 for x in s]
    fig, axes = plt.subplots(6, 1, figsize=(8, 15))
    mem, cpu, cams, rec, fps, back = axes
    mem.plot(t, [x["rss_mib"] for x in s], "-", label="RSS, all server processes")
    names = sorted(set().union(*(x["rss_by_process"] for x in s))) if s else []
    for name in names:
        mem.plot(t, [x["rss_by_process"].get(name, float("nan")) for x in s], ":", label=name)
    mem.set_ylabel("MiB")
    mem.legend(fontsize=7)
    cpu.plot(t, [x["cpu_pct"] for x in s], "-")
    cpu.set_ylabel("server CPU, % of a core")
    cams.plot(t, [x["states"].get("streaming", 0) for x in s], "-", label="streaming")
    cams.plot(t, [x["should_up"] for x in s], "--", label="should stream (farm schedule)")
    cams.plot(t, [len(x["not_up"]) for x in s], "-", label="should stream, not streaming")
    cams.plot(t, [x["states"].get("backoff", 0) + x["states"].get("connecting", 0) for x in s], ":",
              label="backoff + connecting")  # fmt: skip
    cams.set_ylabel("cameras")
    cams.set_yscale("symlog")
    cams.legend(fontsize=7)
    workers = sorted(set().union(*(x["reconnect_rate"] for x in s))) if s else []
    for w in workers:
        rec.plot(t, [x["reconnect_rate"].get(w, 0.0) for x in s], "-", label=w)
    if run.meta.get("reconnect_cap"):
        rec.axhline(run.meta["reconnect_cap"], color="red", linestyle="--", label="cap per worker")
    rec.set_ylabel("reconnect attempts/s")
    rec.legend(fontsize=7)
    for i, cam in enumerate(run.meta.get("viewers", [])):
        fps.plot(t, [x["viewer_fps"][i] if i < len(x["viewer_fps"]) else float("nan") for x in s], "-", label=cam)
    fps.set_ylabel("viewer fps")
    fps.set_ylim(0, EXPECTED_FPS * 1.5)
    fps.set_xlabel("minutes")
    fps.legend(fontsize=7)
    for ax in (mem, cpu, cams, rec, fps):
        if ax is not mem:
            ax.sharex(mem)
        ax.grid(True, alpha=0.3)
        if run.kill:
            ax.axvline(run.kill["t"] / 60, color="black", alpha=0.4, linestyle="-.")
    curve = (run.kill or {}).get("curve") or []
    back.plot([c[0] for c in curve], [c[1] for c in curve], ".-")
    if run.kill:
        back.axhline(run.kill["watched"], color="gray", linestyle="--", label="its never-dropping cameras")
        back.axvline(KILL_GOAL_S, color="red", linestyle="--", label="goal: 5 s")
        back.legend(fontsize=7)
    back.set_xlabel("seconds after SIGKILL")
    back.set_ylabel("killed worker's\ncameras streaming")
    back.grid(True, alpha=0.3)
    fig.suptitle(f"Goldentime soak: {run.meta['cameras']} cameras, kill -9 of a worker at the dash-dotted line")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
