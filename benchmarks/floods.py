"""Floods and slow peers against a live `mediaserver serve --workers 2` (issue 13 item 3): does the server keep
serving a viewer at full frame rate while it is attacked?

    .venv/bin/python benchmarks/floods.py                      # every attack, 8 s each (about 2.5 minutes)
    .venv/bin/python benchmarks/floods.py --only slowloris oversized --seconds 12

One simulated camera (gst-rtsp-server, 25 fps H.264) on worker 0, an agency client with an incident around it
and stream tokens, and one aiortc viewer decoding it through WHEP. A probe GETs /healthz on a fresh connection
every 100 ms. For each attack: 3 s before, the attack, 3 s after; per phase the viewer's decoded fps (per
whole second: min and mean), its longest gap between frames, /healthz p95 and failures, the RSS of the
server's processes; and the attack's own figures (statuses, connections the server closed, audit growth).
The attacks (lib/floods_attacks.py): slowloris, oversized headers and bodies, WHEP offer floods with one
token and with many tokens of one agency, garbage datagrams and malformed STUN/DTLS at the viewer's media
port, a camera streaming 100 Mbit/s of `$`-framed garbage and one answering RTSP a byte a second (both on
the viewer's worker), and 10,000 unauthenticated requests with the audit's growth.

Prints one JSON line per attack (`ATTACK {...}`); writes benchmarks/results/floods-<date>-<time>.md, or with
`--append` adds the run to floods-<date>.md (so that a day's short runs make one file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test helpers

from lib.camfarm_measure import machine
from lib.floods_attacks import ATTACKS
from lib.floods_target import ROOT, target

from mediaserver.simcam.clips import ensure_clip

RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=sorted(ATTACKS), help="these attacks (default: all)")
    p.add_argument("--seconds", type=float, default=8.0, help="each attack's duration")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--append", action="store_true", help="add this run to today's floods-<date>.md (runs kept short)")
    return p.parse_args(argv)


async def run(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from helpers.peers import simcam

    clip = ensure_clip(tmp, "h264", gop=25)
    rows = []
    with simcam({"cam": clip}) as cam:
        async with target(tmp, cam.url("cam"), tokens=41) as t:
            for name in args.only or ATTACKS:
                row = await t.measure(ATTACKS[name], args.seconds)
                print("ATTACK", json.dumps(row), flush=True)
                rows.append(row)
    return rows


def fmt_windows(row: dict[str, Any]) -> list[str]:
    out = []
    for w in row["windows"]:
        phase = w["phase"].split(": ", 1)[1]
        health = f"{w['healthz_p95_ms']} ({w['healthz_n']} ok, {w['healthz_failed']} failed)"
        fps = f"{w['fps_min']:.0f} / {w['fps_mean']}"
        out.append(f"| {row['attack']} | {phase} | {w['s']} | {fps} | {w['max_gap_ms']} | {health} | {w['rss_mib']} |")
    return out


def report(rows: list[dict[str, Any]], args: argparse.Namespace, load: str, header: bool = True) -> str:
    lines = [f"# Floods and slow peers, {datetime.now(UTC):%Y-%m-%d}", "",
             f"Machine: {machine()}. `mediaserver serve --workers 2` (127.0.0.1), one 25 fps H.264 camera on "
             "worker 0, one aiortc viewer decoding it by WHEP, /healthz probed on a fresh connection every 100 ms. "
             "Each attack: 3 s before, the attack, 3 s after; fps per whole second.", ""] if header else []  # fmt: skip
    lines += [f"## Run at {datetime.now(UTC):%H:%M} UTC, load average before it {load}", "",
              f"Command: `{' '.join(sys.argv)}`.", "",
              "| attack | phase | s | viewer fps min / mean | longest frame gap ms | /healthz p95 ms "
              "| RSS MiB (all processes) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for row in rows:
        lines += fmt_windows(row)
    lines += ["", "What each attack did and got:", ""]
    for row in rows:
        lines += [f"- **{row['attack']}**: `{json.dumps(row['result'])}`"]
    return "\n".join(lines) + "\n\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="floods-") as tmp:
        rows = asyncio.run(run(args, Path(tmp)))
    path = args.out / (f"floods-{datetime.now(UTC):%Y-%m-%d}.md" if args.append else
                       f"floods-{datetime.now(UTC):%Y-%m-%d-%H%M}.md")  # fmt: skip
    text = report(rows, args, load, header=not (args.append and path.exists()))
    print(text)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
