"""Access-layer benchmark: token checks/s (with the scope check) against raw pyjwt ES256 verify in the same
run, scope queries over 68,000 synthetic cameras spread over Seoul, and the time from incident close to the
last live view ended with N real aiortc WebRTC viewers; and large geometries (issue 15 item 8): the review's
2,000-point route and 13x2,000 polygon (now refused by validation) and the largest geometries validation
allows, on this index and, with `--baseline REV`, on signaling/scope.py as it was at git revision REV.

    .venv/bin/python benchmarks/tokens_scope.py [--cameras 68000] [--checks 3000] [--queries 2000] [--views 100]
        [--large 40] [--baseline REV --baseline-repeat 3]

Prints a Markdown report (pipe it into benchmarks/results/tokens-scope-<date>.md).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
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
from signaling.edge import bearer, caller  # noqa: E402
from signaling.incidents import ValidationError, parse_geometry  # noqa: E402
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
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    python = platform.python_version()
    return f"{os.cpu_count()} CPUs ({model}), load average {load}, Python {python}, {platform.platform()}"


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
        grant = access.verify_stream(bearer(request), caller(request), camera_id)
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


Coords = list[list[float]]
CENTRE = (126.978, 37.5665)
M_LAT = 1 / 111_195  # degrees per metre
M_LON = M_LAT / math.cos(math.radians(CENTRE[1]))


def circle(lon: float, lat: float, radius_m: float, vertices: int) -> Coords:
    ring = [[lon + radius_m * M_LON * math.cos(a), lat + radius_m * M_LAT * math.sin(a)]
            for a in (2 * math.pi * i / (vertices - 1) for i in range(vertices - 1))]  # fmt: skip
    return [*ring, ring[0]]


def walk(rng: np.random.Generator, lon: float, lat: float, steps: int, step_m: float) -> Coords:
    """A route that turns gently: the densest allowed line (every segment near the others)."""
    heading = np.cumsum(rng.normal(0, 0.3, steps))
    x = lon + np.concatenate(([0], np.cumsum(step_m * M_LON * np.cos(heading[1:]))))
    y = lat + np.concatenate(([0], np.cumsum(step_m * M_LAT * np.sin(heading[1:]))))
    return [[float(a), float(b)] for a, b in zip(x, y, strict=True)]


def large_geometries(rng: np.random.Generator) -> dict[str, tuple[dict[str, Any], Callable[[Any], Any], bool]]:
    """name -> (GeoJSON, query(index), allowed by validation). A fresh place per call."""
    lon = CENTRE[0] + rng.uniform(-0.02, 0.02)
    lat = CENTRE[1] + rng.uniform(-0.02, 0.02)
    lons, lats = rng.uniform(SEOUL_BOX[2], SEOUL_BOX[3], 2000), rng.uniform(SEOUL_BOX[0], SEOUL_BOX[1], 2000)
    random_line = [[float(o), float(a)] for o, a in zip(lons, lats, strict=True)]
    review_polygon = [circle(lon, lat, 5000, 2000)]
    review_polygon += [circle(lon + d * M_LON * math.cos(a), lat + d * M_LAT * math.sin(a), 300, 2000)
                       for d, a in ((2500, 2 * math.pi * k / 12) for k in range(12))]  # fmt: skip
    route = walk(rng, lon, lat, 1000, 99)
    allowed_polygon = [circle(lon, lat, 12_500, 700)]
    allowed_polygon += [circle(lon + d * M_LON * math.cos(a), lat + d * M_LAT * math.sin(a), 200, 20)
                        for d, a in ((4000, 2 * math.pi * k / 15) for k in range(15))]  # fmt: skip
    return {
        "before cap: route, 2,000 random points across the city, 100 m buffer": (
            {"type": "LineString", "coordinates": random_line},
            lambda ix: ix.near_line(random_line, 100, 20), False),
        "before cap: polygon, 13 rings x 2,000 vertices, 5 km radius": (
            {"type": "Polygon", "coordinates": review_polygon},
            lambda ix: ix.in_polygon(review_polygon, 200), False),
        "largest allowed: route, 1,000 points, 99 km, 500 m buffer (the maximum), nearest 500": (
            {"type": "LineString", "coordinates": route}, lambda ix: ix.near_line(route, 500, 500), True),
        "largest allowed: route, 1,000 points, 99 km, 100 m buffer, nearest 20": (
            {"type": "LineString", "coordinates": route}, lambda ix: ix.near_line(route, 100, 20), True),
        "largest allowed: polygon, 16 rings, 1,000 vertices, 97 km of edges, 12.5 km radius, nearest 500": (
            {"type": "Polygon", "coordinates": allowed_polygon},
            lambda ix: ix.in_polygon(allowed_polygon, 500), True),
    }  # fmt: skip


def baseline_index(rev: str, points: list[tuple[str, float, float]]) -> Any:
    """signaling/scope.py as it was at `rev`, loaded as its own module, over the same cameras."""
    source = subprocess.run(["git", "show", f"{rev}:signaling/scope.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    module = types.ModuleType(f"scope_at_{rev}")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{rev}:signaling/scope.py", "exec"), module.__dict__)
    return module.CameraIndex(points)


def bench_large(
    cameras: list[dict[str, Any]], n: int, baseline: str | None, baseline_n: int
) -> dict[str, dict[str, Any]]:
    points = [(c["id"], c["lat"], c["lon"]) for c in cameras]
    indexes = {"now": CameraIndex(points)}
    if baseline:
        indexes[baseline] = baseline_index(baseline, points)
    rng = np.random.default_rng(11)
    out: dict[str, dict[str, Any]] = {}
    for version, index in indexes.items():
        for _ in range(n if version == "now" else baseline_n):
            for name, (geometry, query, allowed) in large_geometries(rng).items():
                try:
                    parse_geometry(geometry, (geometry["type"],))
                    accepted = True
                except ValidationError as exc:
                    accepted, refusal = False, exc.message
                assert accepted == allowed, name
                t = time.perf_counter()
                found = len(query(index))
                row = out.setdefault(f"{name} [{version}]", {"times": [], "found": [], "allowed": allowed})
                row["times"].append(1000 * (time.perf_counter() - t))
                row["found"].append(found)
                if not accepted:
                    row["refusal"] = refusal
    for row in out.values():
        times = sorted(row.pop("times"))
        row["p50_ms"] = statistics.median(times)
        row["p95_ms"] = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
        row["runs"] = len(times)
        row["mean_found"] = statistics.mean(row.pop("found"))
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
    parser.add_argument("--large", type=int, default=40, help="runs of each large geometry on this index")
    parser.add_argument("--baseline", help="git revision whose signaling/scope.py to time the large ones on too")
    parser.add_argument("--baseline-repeat", type=int, default=3)
    args = parser.parse_args()
    cameras = synthetic_cameras(args.cameras)
    with tempfile.TemporaryDirectory() as tmp:
        access = Access(Path(tmp) / "bench.db", _no_close, lambda: cameras, FAST)
        tokens = bench_tokens(access, cameras, args.checks)
        access.close()
        scope: dict[str, Any] = bench_scope(cameras, args.queries) if args.queries else {"build_ms": 0.0}
        large = bench_large(cameras, args.large, args.baseline, args.baseline_repeat) if args.large else {}
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
    if large:
        print(f"\n## Large geometries over {args.cameras} cameras (a fresh place each run)\n")
        print("| geometry [index] | runs | p50 ms | p95 ms | cameras found (mean) | validation |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, r in large.items():
            verdict = "allowed" if r["allowed"] else f"400: {r['refusal']}"
            cells = f"{r['runs']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['mean_found']:.0f}"
            print(f"| {name} | {cells} | {verdict} |")
    if close:
        print(f"\n## Incident close with {close['views']} live WebRTC views (aiortc viewers, loopback)\n")
        for key, value in close.items():
            print(f"- {key}: {value:.3f}" if isinstance(value, float) else f"- {key}: {value}")


async def _no_close(session_id: str) -> None:
    return None


if __name__ == "__main__":
    main()
