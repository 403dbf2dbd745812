"""Power loss: what an acknowledged write costs with synchronous=FULL against NORMAL, and whether any is lost when
`mediaserver serve --workers 2` is killed with SIGKILL (front and workers, the whole process group) mid-burst,
many times over.

    .venv/bin/python benchmarks/power_loss.py                     # the cost, then 50 kill rounds
    .venv/bin/python benchmarks/power_loss.py --rounds 5          # a short check
    .venv/bin/python benchmarks/power_loss.py --rounds 0          # the cost only

Cost: the access layer's writes on a database file (WAL) as the server makes them (each its own IMMEDIATE
transaction): an audit append, an incident created (row + audit record), a stream token issued (row + audit
record); `--writes` of each per mode, the modes alternated `--repeat` times, the median kept.

Rounds: tests/helpers/power_loss.py. One simulated camera (gst-rtsp-server), `--clients` agency clients, each
as fast as its quotas allow (incident, token, WHEP view opened and closed, a revoke or a close, refusals); the
server is killed after a random number of acknowledged writes (a fifth to a half of what a round can write),
restarted, and checked: `mediaserver audit verify`, every acknowledged write on record, integrity_check, the
registry unchanged. The database carries over from round to round (the checks cover every round so far).

Writes benchmarks/results/power-loss-<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import power_loss as pl
from helpers.access import FAST, agency, incident_around
from helpers.peers import simcam

from mediaserver.simcam.clips import ensure_clip
from signaling.access import Access
from signaling.quotas import QuotaSettings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# The cost loop writes as fast as it can: no quota in the way (the HTTP rounds keep the real ones).
UNLIMITED = dataclasses.replace(FAST, quotas=QuotaSettings(mint_burst=10**9, incident_burst=10**9))


# -- the cost of a durable commit -------------------------------------------------------------------------------


async def _no_sessions(session_id: str) -> None:
    pass


def _timed(writes: int, one: Callable[[int], object]) -> float:
    t0 = time.perf_counter()
    for i in range(writes):
        one(i)
    return (time.perf_counter() - t0) / writes * 1e3


def cost_once(directory: Path, mode: str, writes: int) -> dict[str, float]:
    """ms per write of each kind on a fresh database with `PRAGMA synchronous=<mode>`."""
    db = str(directory / f"cost-{mode}-{time.monotonic_ns()}.db")
    point = {"id": "cam-0", "lat": pl.LAT, "lon": pl.LON}
    access = Access(db, _no_sessions, lambda: [point], UNLIMITED)
    access.db.execute(f"PRAGMA synchronous={mode}")
    client, _ = agency(access)
    incident = incident_around(access, client, pl.LON, pl.LAT, 50)
    audit = _timed(writes, lambda i: access.audit.append("view.started", camera="cam-0", session=f"s{i}"))
    incidents = _timed(writes, lambda i: incident_around(access, client, pl.LON, pl.LAT, 50))
    tokens = _timed(writes, lambda i: access.issue_stream_token(incident, client, f"officer {i}", 600, "127.0.0.1"))
    access.db.close()
    return {"audit append": audit, "incident created": incidents, "stream token issued": tokens}


def cost(writes: int, repeat: int) -> dict[str, dict[str, float]]:
    """{mode: {kind: median ms per write}}, the modes alternated so that a busy moment hits both."""
    samples: dict[str, list[dict[str, float]]] = {"NORMAL": [], "FULL": []}
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        for _ in range(repeat):
            for mode in samples:
                samples[mode].append(cost_once(Path(tmp), mode, writes))
    return {mode: {kind: statistics.median(s[kind] for s in runs) for kind in runs[0]} for mode, runs in
            samples.items()}  # fmt: skip


# -- kill rounds ------------------------------------------------------------------------------------------------


async def rounds(count: int, clients: int, workers: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        clip = ensure_clip(Path(tmp), "h264", gop=25)
        with simcam({"h264": clip}) as cam:
            db, log = str(Path(tmp) / "gt.db"), ROOT / "build" / "power-loss-server.log"
            log.write_bytes(b"")
            basics = pl.prepare(db, cam.url("h264"), clients)
            registry = pl.registry_rows(db)
            offer = await pl.make_offer()
            seen = pl.Acked()
            base, proc = pl.start(db, log, workers)
            try:
                await pl.wait_streaming(base, proc, 60)
                for n in range(count):
                    burst = pl.Burst(base, basics, offer, f"r{n}")
                    target = pl.kill_point(rng, clients)
                    killed_at = await pl.burst_and_kill(burst, proc, target)
                    seen.merge(burst.acked)
                    t0 = time.monotonic()
                    base, proc = pl.start(db, log, workers)
                    try:
                        up = await pl.wait_streaming(base, proc, 60)
                    except AssertionError as exc:  # a server that cannot come back is the finding: record it
                        tail = log.read_text(errors="replace")[-1500:]
                        out.append({"round": n + 1, "ok": False, "killed_at_s": killed_at, "acked": 0, "cut": 0,
                                    "views": 0, "restart_s": 0, "verify_s": 0, "records": 0,
                                    "problem": f"restart failed ({exc}): {tail!r}"})  # fmt: skip
                        print(out[-1], flush=True)
                        break
                    result = pl.check(db, seen, registry)
                    row: dict[str, object] = {
                        "round": n + 1, "killed_at_s": killed_at, "acked": burst.acked.writes(),
                        "cut": burst.acked.cut, "views": len(burst.acked.views_started), "restart_s": up,
                        "verify_s": result.verify_s, "records": result.audit_records, "ok": result.ok,
                        "missing": sum(len(v) for v in result.missing.values()),
                        "restart_wall_s": time.monotonic() - t0,
                    }  # fmt: skip
                    print(row, flush=True)
                    if not result.ok:
                        row["problem"] = f"{result.missing} verify={result.verify_out!r} {result.integrity}"
                    out.append(row)
            finally:
                if proc.poll() is None:
                    pl.kill_group(proc)
    return out


# -- the record -------------------------------------------------------------------------------------------------


def report(args: argparse.Namespace, costs: dict[str, dict[str, float]], rows: list[dict[str, object]]) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"# Power loss, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Command: `.venv/bin/python benchmarks/power_loss.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {os.cpu_count()} vCPU shared with other work, load average at the end {load}; ext4 on a "
             "virtio disk.", ""]  # fmt: skip
    if costs:
        lines += ["## Cost per acknowledged write (median ms, one IMMEDIATE transaction each, WAL)", "",
                  f"{args.writes} writes of each kind per mode, modes alternated {args.repeat} times.", "",
                  "| write | NORMAL | FULL | FULL - NORMAL |", "| --- | --- | --- | --- |"]  # fmt: skip
        for kind in costs["FULL"]:
            normal, full = costs["NORMAL"][kind], costs["FULL"][kind]
            lines.append(f"| {kind} | {normal:.3f} | {full:.3f} | +{full - normal:.3f} |")
        lines.append("")
    if rows:
        ok = sum(1 for r in rows if r["ok"])
        acked = [int(str(r["acked"])) for r in rows]
        lines += [f"## SIGKILL of serve --workers {args.workers} mid-burst, {len(rows)} rounds", "",
                  f"**{ok} of {len(rows)} rounds intact** (audit verify passed, every acknowledged write on record, "
                  f"integrity_check ok, registry unchanged); {sum(acked)} acknowledged writes in all "
                  f"({min(acked)}..{max(acked)} per round), {sum(int(str(r['cut'])) for r in rows)} requests cut "
                  f"off by the kill, {sum(int(str(r['views'])) for r in rows)} WHEP views among the writes.", "",
                  "| round | killed after (s) | acked writes | cut off | restart to streaming (s) | audit verify (s) | "
                  "audit records | intact |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in rows:
            lines.append(f"| {r['round']} | {float(str(r['killed_at_s'])):.2f} | {r['acked']} | {r['cut']} | "
                         f"{float(str(r['restart_s'])):.1f} | {float(str(r['verify_s'])):.2f} | {r['records']} | "
                         f"{'yes' if r['ok'] else 'NO: ' + str(r.get('problem', ''))} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--writes", type=int, default=300, help="writes of each kind per mode for the cost")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-cost", action="store_true")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    (ROOT / "build").mkdir(exist_ok=True)
    costs = {} if args.no_cost else cost(args.writes, args.repeat)
    for mode, kinds in costs.items():
        print(mode, {k: round(v, 3) for k, v in kinds.items()}, flush=True)
    rows = asyncio.run(rounds(args.rounds, args.clients, args.workers, args.seed)) if args.rounds else []
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"power-loss-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}.md"
    out.write_text(report(args, costs, rows))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
