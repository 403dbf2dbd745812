"""Worker metrics: a JSON-able sample per worker, and the Prometheus text exposition of many samples.

A worker (in-process or a process of its own) answers `sample_worker()`; the front gathers one sample per
worker and renders them with `render()` (text format 0.0.4, written by hand: no dependency).

Cardinality: by default every series is per worker or per node, never per camera, so 10,000 cameras cost
the same few dozen series as ten. Per-camera series are opt-in for named cameras (`/metrics?camera=ID`).
Counters carry a `worker` label: each worker process counts from zero after a restart, and Prometheus
handles a reset per series (sum them in PromQL: `sum(rate(goldentime_frames_total[1m]))`). The cameras of a
worker that is down count as state "worker_down"; `goldentime_worker_restarts_total` counts its restarts.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediaserver.worker import Worker

Sample = dict[str, Any]
Labels = Mapping[str, str]

GOP_AGE_BUCKETS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
STATES = ("idle", "connecting", "streaming", "backoff", "stopped", "worker_down")  # worker_down: the front's
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --- sampling (runs in the worker) ---------------------------------------------------------------------


def process_sample(name: str) -> Sample:
    """CPU seconds and resident memory of this process."""
    times = os.times()
    return {"worker": name, "cpu_seconds": times.user + times.system, "resident_bytes": resident_bytes()}


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def sample_worker(worker: Worker | None, name: str, cameras: Iterable[str] = ()) -> Sample:
    """Everything /metrics shows about one worker; `cameras` names those wanted as per-camera series."""
    sample = process_sample(name)
    states: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    ages: list[float] = []
    now = time.monotonic()
    ingests = list(worker.ingests.values()) if worker is not None else []
    subs = list(worker.sub_ingests.values()) if worker is not None else []
    for ingest in ingests:
        states[ingest.state.value] += 1
        hub = ingest.hub
        if hub.gop_bytes:
            ages.append(now - hub.last_keyframe_at)
    for ingest in ingests + subs:  # a sub-stream's traffic and failures are the camera's too
        hub = ingest.hub
        errors.update(ingest.errors)
        totals["frames"] += hub.units
        totals["bytes"] += hub.bytes
        totals["gop_bytes"] += hub.gop_bytes
        totals["lost"] += ingest.rtp_counters()["lost"]
        totals["reconnects"] += max(ingest.attempts - 1, 0)
        totals["reads"] += ingest.socket_reads()
    sample.update(
        cameras=dict(states),
        substreams=dict(Counter(ingest.state.value for ingest in subs)),
        errors={str(kind): n for kind, n in errors.items()},  # ErrorKind values: the `kind` label
        frames=totals["frames"],
        bytes=totals["bytes"],
        gop_bytes=totals["gop_bytes"],
        packets_lost=totals["lost"],
        reconnects=totals["reconnects"],
        socket_reads=totals["reads"],
        gop_age=_age_summary(ages),
        viewers=len(worker.egress.sessions) if worker is not None else 0,
        per_camera={cid: status for cid in cameras if worker is not None and (status := worker.status(cid))},
        recording=worker.recording_stats() if worker is not None else None,
    )
    return sample


def _age_summary(ages: list[float]) -> dict[str, Any]:
    buckets = [sum(1 for a in ages if a <= bound) for bound in GOP_AGE_BUCKETS]
    return {"buckets": buckets, "count": len(ages), "sum": sum(ages), "max": max(ages, default=0.0)}


# --- the exposition (runs in the front) ----------------------------------------------------------------


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Prometheus text format: each family once, HELP and TYPE before its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {format_value(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{escape_label(str(value))}"' for key, value in labels.items()) + "}"


def render(samples: list[Sample], front: Sample | None = None, workers: Sequence[Mapping[str, Any]] = ()) -> str:
    """The /metrics page for these worker samples (and the front process's own CPU/RSS, if separate).

    `workers` is the supervisor's view (signaling WorkerOps.workers(): name, up, restarts, cameras, and CPU/RSS
    read from /proc): a worker in it without a sample (dead, restarting or not answering) counts its cameras
    as "worker_down", so they never just vanish from the totals."""
    out = Exposition()
    sampled = {s["worker"] for s in samples}
    silent = [w for w in workers if w.get("name") not in sampled]
    _node_gauges(out, samples, sum(int(w.get("cameras") or 0) for w in silent))
    _worker_counters(out, samples)
    _gop_age(out, samples)
    _recording(out, samples)
    processes = [*samples, *([front] if front else []), *(w for w in silent if "cpu_seconds" in w)]
    out.family("goldentime_worker_cpu_seconds_total", "counter", "CPU time (user+system) of each process.",
               [({"worker": _name(p)}, p["cpu_seconds"]) for p in processes])  # fmt: skip
    out.family("goldentime_worker_resident_bytes", "gauge", "Resident memory of each process.",
               [({"worker": _name(p)}, p["resident_bytes"]) for p in processes])  # fmt: skip
    out.family("goldentime_workers", "gauge", "Media workers answering now.", [({}, len(samples))])
    _supervision(out, workers, sampled)
    _per_camera(out, samples)
    return out.text()


def _name(process: Mapping[str, Any]) -> str:
    return str(process.get("worker") or process.get("name"))


def _supervision(out: Exposition, workers: Sequence[Mapping[str, Any]], sampled: set[str]) -> None:
    if not workers:
        return
    named = [(w, {"worker": str(w.get("name"))}) for w in workers]
    out.family("goldentime_worker_up", "gauge", "1 while the worker answers, 0 while it is dead or restarting.",
               [(labels, float(w.get("name") in sampled)) for w, labels in named])  # fmt: skip
    out.family("goldentime_worker_restarts_total", "counter", "Times the supervisor restarted the worker.",
               [(labels, int(w.get("restarts") or 0)) for w, labels in named])  # fmt: skip
    out.family("goldentime_worker_cameras", "gauge", "Cameras the worker serves (or should, while down).",
               [(labels, int(w.get("cameras") or 0)) for w, labels in named])  # fmt: skip


def _node_gauges(out: Exposition, samples: list[Sample], worker_down: int = 0) -> None:
    states: Counter[str] = Counter({state: 0 for state in STATES})
    for s in samples:
        states.update(s["cameras"])
    states["worker_down"] += worker_down
    out.family("goldentime_cameras", "gauge", "Cameras by ingest state.",
               [({"state": state}, n) for state, n in sorted(states.items())])  # fmt: skip
    out.family("goldentime_viewers", "gauge", "Live WebRTC sessions.", [({}, sum(s["viewers"] for s in samples))])
    out.family("goldentime_gop_cache_bytes", "gauge", "Bytes held in GOP caches.",
               [({}, sum(s["gop_bytes"] for s in samples))])  # fmt: skip
    subs: Counter[str] = Counter()
    for s in samples:
        subs.update(s.get("substreams", {}))
    out.family("goldentime_substreams", "gauge", "Registered sub-streams ingested, by state.",
               [({"state": state}, n) for state, n in sorted(subs.items())])  # fmt: skip


def _worker_counters(out: Exposition, samples: list[Sample]) -> None:
    for key, name, help_text in (
        ("frames", "goldentime_frames_total", "Access units received from cameras."),
        ("bytes", "goldentime_bytes_total", "Access-unit bytes received from cameras."),
        ("packets_lost", "goldentime_packets_lost_total", "RTP packets lost (sequence gaps)."),
        ("reconnects", "goldentime_reconnects_total", "RTSP connection attempts after a camera's first."),
        ("socket_reads", "goldentime_socket_reads_total", "Reads of camera sockets (the wake-ups ingest costs)."),
    ):
        out.family(name, "counter", help_text, [({"worker": s["worker"]}, s[key]) for s in samples])
    errors = [({"worker": s["worker"], "kind": kind}, n) for s in samples for kind, n in sorted(s["errors"].items())]
    help_text = "RTSP session failures by kind (one of mediaserver.rtsp.errors.ErrorKind)."
    out.family("goldentime_rtsp_errors_total", "counter", help_text, errors)


def _gop_age(out: Exposition, samples: list[Sample]) -> None:
    """How old the cached GOPs are (time since each camera's last keyframe): a distribution over cameras,
    as gauges (it is a snapshot, not a counter, so not a Prometheus histogram)."""
    buckets = [sum(s["gop_age"]["buckets"][i] for s in samples) for i in range(len(GOP_AGE_BUCKETS))]
    count = sum(s["gop_age"]["count"] for s in samples)
    total = sum(s["gop_age"]["sum"] for s in samples)
    cumulative = [({"le": format_value(bound)}, n) for bound, n in zip(GOP_AGE_BUCKETS, buckets, strict=True)]
    out.family("goldentime_gop_cache_age_cameras", "gauge", "Cameras whose cached GOP is at most le seconds old.",
               cumulative)  # fmt: skip
    out.family("goldentime_gop_cache_age_seconds_max", "gauge", "Oldest cached GOP.",
               [({}, max((s["gop_age"]["max"] for s in samples), default=0.0))])  # fmt: skip
    out.family("goldentime_gop_cache_age_seconds_avg", "gauge", "Mean age of the cached GOPs.",
               [({}, total / count if count else 0.0)])  # fmt: skip


def _recording(out: Exposition, samples: list[Sample]) -> None:
    """The recording ring of each worker that has one (mediaserver/recording.py); up 0 means a write failed."""
    rings = [(s["worker"], s["recording"]) for s in samples if s.get("recording")]
    if not rings:
        return
    out.family("goldentime_recording_up", "gauge", "1 while the worker's ring records, 0 once a write failed.",
               [({"worker": w}, float(r["state"] == "recording")) for w, r in rings])  # fmt: skip
    for key, name, kind in (
        ("units", "goldentime_recording_units_total", "counter"),
        ("bytes_written", "goldentime_recording_written_bytes_total", "counter"),
        ("dropped", "goldentime_recording_dropped_total", "counter"),
        ("disk_bytes", "goldentime_recording_disk_bytes", "gauge"),
        ("index_bytes", "goldentime_recording_index_bytes", "gauge"),
    ):
        out.family(name, kind, f"Recording ring: {key}.", [({"worker": w}, r[key]) for w, r in rings])


def _per_camera(out: Exposition, samples: list[Sample]) -> None:
    cameras = {cid: status for s in samples for cid, status in s.get("per_camera", {}).items()}
    if not cameras:
        return
    for key, name, kind in (
        ("units", "goldentime_camera_frames_total", "counter"),
        ("packets_lost", "goldentime_camera_packets_lost_total", "counter"),
        ("connects", "goldentime_camera_connects_total", "counter"),
        ("viewers", "goldentime_camera_viewers", "gauge"),
    ):
        out.family(name, kind, f"Per camera (opt-in): {key}.",
                   [({"camera": cid}, float(st.get(key) or 0)) for cid, st in sorted(cameras.items())])  # fmt: skip
    ordered = sorted(cameras.items())
    streaming = [({"camera": cid}, float(st.get("state") == "streaming")) for cid, st in ordered]
    out.family("goldentime_camera_streaming", "gauge", "Per camera (opt-in): 1 while streaming.", streaming)
    ages = [({"camera": cid}, _or(st.get("gop_age_s"), -1.0)) for cid, st in ordered]
    out.family("goldentime_camera_gop_age_seconds", "gauge", "Per camera (opt-in): cached GOP age (-1: none).", ages)


def _or(value: Any, default: float) -> float:
    return default if value is None else float(value)
