"""Which cameras a geometry opens: the spatial index answers exactly what a brute-force walk over every camera
answers (seeded random cameras and geometries), and geometries too large to answer quickly are refused with a
400 that says which limit they broke (issue 15 item 8: a 2,000-point route froze the loop for 2 s)."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, agency, basic, until

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS
from signaling.app import create_app
from signaling.incidents import (
    MAX_RINGS,
    MAX_VERTICES,
    ValidationError,
    compute_scope,
    parse_create,
    parse_geometry,
)
from signaling.scope import CameraIndex, Hit, Projection, ScopeIndex

Coords = list[list[float]]
CENTRE = (126.978, 37.5665)
M_LAT = 1 / 111_195
M_LON = M_LAT / math.cos(math.radians(CENTRE[1]))


def no_hubs(camera_id: str) -> Hub | None:
    return None


# -- brute force: every camera against every part of the geometry, in plain Python --------------------------


def brute_point(index: CameraIndex, pts: list[tuple[str, float, float]], lon: float, lat: float, r: float) -> list[Hit]:
    px, py = index.proj.point(lon, lat)
    out = []
    for cid, x, y in _plane(index.proj, pts):
        d = math.hypot(x - px, y - py)
        if d <= r:
            out.append((cid, d))
    return sorted(out, key=lambda h: h[1])


def brute_line(index: CameraIndex, pts: list[tuple[str, float, float]], line: Coords, buf: float) -> list[Hit]:
    plane = [index.proj.point(p[0], p[1]) for p in line]
    out = []
    for cid, x, y in _plane(index.proj, pts):
        best = math.inf
        for (ax, ay), (bx, by) in itertools.pairwise(plane):
            dx, dy = bx - ax, by - ay
            length2 = dx * dx + dy * dy
            t = 0.0 if not length2 else min(1.0, max(0.0, ((x - ax) * dx + (y - ay) * dy) / length2))
            best = min(best, math.hypot(x - (ax + t * dx), y - (ay + t * dy)))
        if best <= buf:
            out.append((cid, best))
    return sorted(out, key=lambda h: h[1])


def brute_polygon(index: CameraIndex, pts: list[tuple[str, float, float]], rings: list[Coords]) -> list[Hit]:
    plane = [[index.proj.point(p[0], p[1]) for p in ring] for ring in rings]
    xs, ys = [p[0] for p in plane[0]], [p[1] for p in plane[0]]
    cx, cy = sum(xs[:-1]) / (len(xs) - 1), sum(ys[:-1]) / (len(ys) - 1)
    out = []
    for cid, x, y in _plane(index.proj, pts):
        if not (min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys)):
            continue
        inside = False
        for ring in plane:
            for (x1, y1), (x2, y2) in itertools.pairwise(ring):
                if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                    inside = not inside
        if inside:
            out.append((cid, math.hypot(x - cx, y - cy)))
    return sorted(out, key=lambda h: h[1])


def _plane(proj: Projection, pts: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    return [(cid, *proj.point(lon, lat)) for cid, lat, lon in pts]


def same(got: list[Hit], want: list[Hit]) -> None:
    """The same cameras at the same distances (to the 0.1 m the index rounds to), nearest first."""
    assert {c for c, _ in got} == {c for c, _ in want}, (len(got), len(want))
    distance = dict(want)
    assert all(abs(d - distance[c]) <= 0.051 for c, d in got)
    assert [d for _, d in got] == sorted(d for _, d in got)


# -- random worlds ------------------------------------------------------------------------------------------


def cameras(rng: np.random.Generator, n: int) -> list[tuple[str, float, float]]:
    """Spread over ~8 km, some clustered, some sharing a position, some exactly on grid lines."""
    lat = CENTRE[1] + rng.uniform(-4000, 4000, n) * M_LAT
    lon = CENTRE[0] + rng.uniform(-4000, 4000, n) * M_LON
    k = n // 5
    lat[:k] = lat[k : 2 * k]  # duplicates
    lon[:k] = lon[k : 2 * k]
    pts = [(f"c{i}", float(a), float(o)) for i, (a, o) in enumerate(zip(lat, lon, strict=True))]
    index = CameraIndex(pts)
    for j in range(2 * k, 2 * k + 20):  # on cell boundaries of the index's grid
        lat_j = index.proj.lat0 + (index.y0 + 250.0 * int(rng.integers(1, 20))) / index.proj.ky
        pts[j] = (pts[j][0], lat_j, pts[j][2])
    return pts


def ring_around(rng: np.random.Generator, lon: float, lat: float, radius: float, vertices: int) -> Coords:
    angles = np.sort(rng.uniform(0, 2 * math.pi, vertices))
    radii = rng.uniform(0.2, 1.0, vertices) * radius
    ring = [[lon + r * M_LON * math.cos(a), lat + r * M_LAT * math.sin(a)] for r, a in zip(radii, angles, strict=True)]
    return [*ring, ring[0]]


def place(rng: np.random.Generator) -> tuple[float, float]:
    return CENTRE[0] + rng.uniform(-4500, 4500) * M_LON, CENTRE[1] + rng.uniform(-4500, 4500) * M_LAT


@pytest.mark.parametrize("seed", range(6))
def test_index_answers_what_brute_force_answers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = cameras(rng, 1500)
    index = CameraIndex(pts)
    for _ in range(8):
        lon, lat = place(rng)
        r = float(rng.uniform(1, 2500))
        same(index.near_point(lon, lat, r), brute_point(index, pts, lon, lat, r))

        vertices = int(rng.integers(2, 40))
        line = [[lon + float(rng.normal(0, 1500)) * M_LON, lat + float(rng.normal(0, 1500)) * M_LAT]
                for _ in range(vertices)]  # fmt: skip
        line.insert(1, list(line[0]))  # a zero-length segment
        if rng.random() < 0.5:  # a horizontal and a vertical leg
            line += [[line[-1][0] + 0.01, line[-1][1]], [line[-1][0] + 0.01, line[-1][1] + 0.01]]
        buf = float(rng.uniform(1, 500))
        same(index.near_line(line, buf), brute_line(index, pts, line, buf))

        rings = [ring_around(rng, lon, lat, float(rng.uniform(300, 5000)), int(rng.integers(3, 60)))]
        rings += [ring_around(rng, *place(rng), 400, int(rng.integers(3, 12))) for _ in range(int(rng.integers(0, 4)))]
        same(index.in_polygon(rings), brute_polygon(index, pts, rings))


def test_a_limit_keeps_the_nearest() -> None:
    rng = np.random.default_rng(42)
    pts = cameras(rng, 2000)
    index = CameraIndex(pts)
    lon, lat = CENTRE
    rings = [ring_around(rng, lon, lat, 3000, 50)]
    line = [[lon - 0.03, lat], [lon + 0.03, lat + 0.01]]
    for full, limited in ((index.in_polygon(rings), index.in_polygon(rings, 25)),
                          (index.near_line(line, 400), index.near_line(line, 400, 25)),
                          (index.near_point(lon, lat, 2000), index.near_point(lon, lat, 2000, 25))):  # fmt: skip
        assert len(full) > 25 and [d for _, d in limited] == [d for _, d in full[:25]]
        assert index.in_polygon(rings, 25) == index.in_polygon(rings, 25)  # deterministic


def test_an_empty_index_answers_nothing() -> None:
    index = CameraIndex([])
    assert index.near_point(*CENTRE, 500) == []
    assert index.near_line([list(CENTRE), [CENTRE[0] + 0.01, CENTRE[1]]], 100) == []
    assert index.in_polygon([ring_around(np.random.default_rng(1), *CENTRE, 1000, 10)]) == []


async def test_rescope_computes_open_incidents_off_the_loop_after_a_rebuild(tmp_path: Any) -> None:
    rng = np.random.default_rng(3)
    pts = cameras(rng, 800)
    app = create_app(LocalWorkerClient(Egress(no_hubs)), lambda: [], db=tmp_path / "gt.db", access=FAST,
                     web_dir=None)  # fmt: skip
    access = app[ACCESS]
    police, _ = agency(access)
    body = {"service": "disaster", "basis": "Disaster and Safety Act", "until": until(),
            "geometry": {"type": "Polygon", "coordinates": [ring_around(rng, *CENTRE, 3000, 40)]}}  # fmt: skip
    incident = access.create_incident(parse_create(body), police, "op", None)
    assert access.incidents.cameras(incident) == []  # no cameras yet
    access.scope.update(pts)
    assert await asyncio.wait_for(access.incidents.rescope(), 10) == 1
    fresh = ScopeIndex(pts)
    assert access.incidents.cameras(incident) == compute_scope(fresh, incident) != []
    access.close()


# -- limits -------------------------------------------------------------------------------------------------


def circle(lon: float, lat: float, radius_m: float, vertices: int) -> Coords:
    ring = [[lon + radius_m * M_LON * math.cos(a), lat + radius_m * M_LAT * math.sin(a)]
            for a in (2 * math.pi * i / (vertices - 1) for i in range(vertices - 1))]  # fmt: skip
    return [*ring, ring[0]]


def refused(geometry: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_geometry(geometry, ("Point", "LineString", "Polygon"))
    return f"{caught.value.field}: {caught.value.message}"


def test_geometry_limits() -> None:
    lon, lat = CENTRE
    line = [[lon + i * 20 * M_LON, lat] for i in range(MAX_VERTICES)]  # 20 km, the most positions
    parse_geometry({"type": "LineString", "coordinates": line}, ("LineString",))
    assert "1000" in refused({"type": "LineString", "coordinates": [*line, [lon, lat]]})
    rings = [circle(lon, lat, 3000, 100)] + [circle(lon, lat, 50 + i, 60) for i in range(15)]  # 1,000 positions
    parse_geometry({"type": "Polygon", "coordinates": rings}, ("Polygon",))
    one_more = [*rings[:-1], circle(lon, lat, 9, 61)]
    assert "at most 1000 positions in all rings" in refused({"type": "Polygon", "coordinates": one_more})
    too_many = [circle(lon, lat, 100, 5)] * (MAX_RINGS + 1)
    assert f"1 to {MAX_RINGS} linear rings" in refused({"type": "Polygon", "coordinates": too_many})
    far = [[lon, lat], [lon + 60_000 * M_LON, lat]]  # 60 km
    assert "at most 50 km" in refused({"type": "LineString", "coordinates": far})
    zigzag = [[lon + (i % 2) * 40_000 * M_LON, lat + i * M_LAT] for i in range(4)]  # 120 km in a 40 km box
    assert "at most 100 km" in refused({"type": "LineString", "coordinates": zigzag})
    padded = {"type": "Point", "coordinates": [lon, lat], "properties": {"note": "x" * 70_000}}
    assert "bytes of JSON" in refused(padded)
    assert "out of range" in refused({"type": "Point", "coordinates": [200.0, 37.0]})
    assert "two numbers" in refused({"type": "Point", "coordinates": [float("nan"), 37.0]})


# -- over HTTP -----------------------------------------------------------------------------------------------


@pytest.fixture
async def http(tmp_path: Any) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    app = create_app(LocalWorkerClient(Egress(no_hubs)), lambda: [], db=tmp_path / "gt.db", access=FAST, web_dir=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        police, secret = agency(app[ACCESS])
        yield client, basic(police.client_id, secret)


async def test_the_reviews_2000_point_route_gets_a_clear_400(http: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    client, headers = http
    rng = np.random.default_rng(0)
    route = [[float(rng.uniform(126.76, 127.18)), float(rng.uniform(37.43, 37.70))] for _ in range(2000)]
    body = {"service": "119-dispatch", "basis": "Fire Services Act", "until": until(),
            "geometry": {"type": "LineString", "coordinates": route}}  # fmt: skip
    res = await client.post("/api/incidents", json=body, headers=headers)
    err = await res.json()
    assert res.status == 400 and err["field"] == "geometry.coordinates", err
    assert "1000" in err["error"]
    polygon = [circle(*CENTRE, 5000, 2000)] + [circle(*CENTRE, 300 + i, 2000) for i in range(12)]
    polygon = [[[round(lon, 3), round(lat, 3)] for lon, lat in ring] for ring in polygon]  # under the body limit
    res = await client.post("/api/incidents", headers=headers, json={**body, "service": "disaster",
                            "geometry": {"type": "Polygon", "coordinates": polygon}})  # fmt: skip
    err = await res.json()
    assert res.status == 400 and err["field"] == "geometry.coordinates" and "1000 positions" in err["error"], err
    ok = {**body, "geometry": {"type": "LineString", "coordinates": [list(CENTRE), [CENTRE[0] + 0.05, CENTRE[1]]]}}
    assert (await client.post("/api/incidents", json=ok, headers=headers)).status == 201
