"""Access-layer benchmark: token checks/s (with the scope check) against raw pyjwt ES256 verify in the same
run, scope queries over 68,000 synthetic cameras spread over Seoul, and the time from incident close to the
last live view ended with N real aiortc WebRTC viewers.

    .venv/bin/python benchmarks/tokens_scope.py [--cameras 68000] [--checks 3000] [--queries 2000] [--views 100]

Prints a Markdown report (pipe it into benchmarks/results/tokens-scope-<date>.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
import numpy as np
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from helpers.access import FAST, agency, incident_around  # noqa: E402
from helpers.feed import feed, make_clip, read_units  # noqa: E402

from mediaserver.cluster.worker_client import LocalWorkerClient  # noqa: E402
from mediaserver.egress import Egress, use_ice_hosts  # noqa: E402
from mediaserver.hub import Hub  # noqa: E402
from signaling.access import ACCESS, Access  # noqa: E402
from signaling.app import create_app  # noqa: E402
from signaling.scope import CameraIndex  # noqa: E402

SEOUL_BOX = (37.43, 37.70, 126.76, 127.18)  # lat min/max, lon min/max


def synthetic_cameras(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    lat = rng.uniform(SEOUL_BOX[0], SEOUL_BOX[1], n)
    lon = rng.uniform(SEOUL_BOX[2], SEOUL_BOX[3], n)
    return [
        {"id": f"cam{i:05d}", "lat": float(a), "lon": float(o)} for i, (a, o) in enumerate(zip(lat, lon, strict=True))
    ]


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.platform()}"


def bench_tokens(access: Access, cameras: list[dict[str, Any]], n: int) -> dict[str, float]:
    police, _ = agency(access, "police-bench")
    cam = cameras[len(cameras) // 2]
    incident = incident_around(access, police, cam["lon"], cam["lat"], 500)
    token, _, hits = access.issue_stream_token(incident, police, "bench operator", None, None)
    camera_id = hits[0][0]
    public = access.keys.signing_key().public
    s = access.settings.tokens
    request = make_mocked_request("POST", f"/whep/{camera_id}", headers={"Authorization": f"Bearer {token}"})

    def raw() -> None:
        jwt.decode(token, public, algorithms=["ES256"], audience=s.stream_audience, issuer=s.issuer)

    def ours() -> None:
        grant = access.verify_stream(request, camera_id)
        access.check_scope(request, grant, camera_id)

    rates: dict[str, float] = {}
    for _ in range(2):  # interleaved rounds, best of each: the same machine state for both
        for name, fn in (("raw", raw), ("ours", ours)):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            rates[name] = max(rates.get(name, 0.0), n / (time.perf_counter() - t0))
    return {"raw_per_s": rates["raw"], "ours_per_s": rates["ours"], "ratio": rates["ours"] / rates["raw"]}


def bench_scope(cameras: list[dict[str, Any]], n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    index = CameraIndex([(c["id"], c["lat"], c["lon"]) for c in cameras])
    build_ms = 1000 * (time.perf_counter() - t0)
    rng = np.random.default_rng(3)
    lat = rng.uniform(SEOUL_BOX[0] + 0.02, SEOUL_BOX[1] - 0.02, n)
    lon = rng.uniform(SEOUL_BOX[2] + 0.02, SEOUL_BOX[3] - 0.02, n)
    dlat, dlon = 1000 / 111_195, 1000 / (111_195 * 0.7923)  # ~1 km
    kinds = {
        "point: nearest 4 within 500 m": lambda a, o: index.near_point(o, a, 500, 4),
        "point: all within 1 km": lambda a, o: index.near_point(o, a, 1000, None),
        "polygon: 2 km x 2 km area": lambda a, o: index.in_polygon(
            [
                [
                    [o - dlon, a - dlat],
                    [o + dlon, a - dlat],
                    [o + dlon, a + dlat],
                    [o - dlon, a + dlat],
                    [o - dlon, a - dlat],
                ]
            ]
        ),
        "route: 5 km, 8 legs, 100 m buffer": lambda a, o: index.near_line(
            [[o + i * 0.7 * dlon, a + (i % 2) * 0.3 * dlat] for i in range(9)], 100, None
        ),
    }
    out: dict[str, Any] = {"build_ms": build_ms}
    for name, query in kinds.items():
        times, found = [], []
        for a, o in zip(lat.tolist(), lon.tolist(), strict=True):
            t = time.perf_counter()
            found.append(len(query(a, o)))
            times.append(1000 * (time.perf_counter() - t))
        q = statistics.quantiles(times, n=100)
        out[name] = {"p50_ms": q[49], "p95_ms": q[94], "max_ms": max(times), "mean_found": statistics.mean(found)}
    return out


async def bench_close(views: int, clip_dir: Path) -> dict[str, Any]:
    # A small picture: the viewers run in this process and decode what they get, and 2 cores must hold
    # both them and the server's sessions. The close path does not depend on the picture size.
    units = read_units(make_clip(clip_dir / "c.h264", seconds=2, gop=25, size="160x96"))
    hub = Hub("cam")
    feeder = asyncio.create_task(feed(hub, units, start=5))
    egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
    camera = {"id": "cam1", "lat": 37.5665, "lon": 126.978}
    app = create_app(LocalWorkerClient(egress), lambda: [camera], db=clip_dir / "gt.db", access=FAST)
    access = app[ACCESS]
    pcs: list[RTCPeerConnection] = []
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        police, _ = agency(access, "police-112")
        incident = incident_around(access, police, 126.978, 37.5665, 100)
        t_connect = time.monotonic()
        for i in range(views):
            token, _, _ = access.issue_stream_token(incident, police, f"operator {i}", None, None)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            with use_ice_hosts(["127.0.0.1"]):
                await pc.setLocalDescription(await pc.createOffer())
            headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
            res = await http.post("/whep/cam1", data=pc.localDescription.sdp, headers=headers)
            assert res.status == 201, await res.text()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=await res.text(), type="answer"))
            pcs.append(pc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live = sum(1 for s in egress.sessions if s["frames_sent"] > 0)
            if live == views:
                break
            await asyncio.sleep(0.2)
        connect_s = time.monotonic() - t_connect
        live = sum(1 for s in egress.sessions if s["frames_sent"] > 0)
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        ended = await access.close_incident(access.incidents.get(incident.id), police, "closed")  # type: ignore[arg-type]
        close_s = time.monotonic() - t0
        remaining = len(egress.sessions)
        audited = len(access.audit.query(incident=incident.id, event="view.ended", limit=10_000))
    for pc in pcs:
        await pc.close()
    await egress.close_all()
    feeder.cancel()
    return {"views": views, "live_before_close": live, "connect_s": connect_s, "views_ended": ended,
            "close_to_last_ended_s": close_s, "sessions_left": remaining, "view_ended_records": audited}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=68_000)
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--views", type=int, default=100)
    args = parser.parse_args()
    cameras = synthetic_cameras(args.cameras)
    with tempfile.TemporaryDirectory() as tmp:
        access = Access(Path(tmp) / "bench.db", _no_close, lambda: cameras, FAST)
        tokens = bench_tokens(access, cameras, args.checks)
        access.close()
        scope = bench_scope(cameras, args.queries)
        close = asyncio.run(bench_close(args.views, Path(tmp))) if args.views else None
    print(f"# Access layer: tokens, scope, close ({time.strftime('%Y-%m-%d')})\n")
    print(f"- machine: {machine()}")
    print(f"- command: `.venv/bin/python benchmarks/tokens_scope.py {' '.join(sys.argv[1:])}`\n")
    print(f"## Token checks ({args.checks} per round, best of 2 interleaved rounds)\n")
    print("| check | per second |\n| --- | --- |")
    print(f"| raw `jwt.decode` ES256 (cached key object) | {tokens['raw_per_s']:.0f} |")
    ours = "ours: alg/typ pin, kid lookup, verify, revocation, incident open + shared, scope"
    print(f"| {ours} | {tokens['ours_per_s']:.0f} |")
    print(f"\nratio ours/raw = **{tokens['ratio']:.2f}** (goal >= 0.8)\n")
    print(f"## Scope queries over {args.cameras} cameras ({args.queries} random places in Seoul)\n")
    print(f"index build: {scope.pop('build_ms'):.0f} ms\n")
    print("| query | p50 ms | p95 ms | max ms | cameras found (mean) |\n| --- | --- | --- | --- | --- |")
    for name, r in scope.items():
        print(f"| {name} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['max_ms']:.2f} | {r['mean_found']:.1f} |")
    if close:
        print(f"\n## Incident close with {close['views']} live WebRTC views (aiortc viewers, loopback)\n")
        for key, value in close.items():
            print(f"- {key}: {value:.3f}" if isinstance(value, float) else f"- {key}: {value}")


async def _no_close(session_id: str) -> None:
    return None


if __name__ == "__main__":
    main()
