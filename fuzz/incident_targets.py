"""Fuzz targets for what an agency's app sends: `json_body` (signaling/json_body.py parse_json, then the incident
validation on whatever it parsed) and `incident` (signaling/incidents.py parse_create / parse_patch /
parse_geometry on structured bodies: the tests' real bodies with values replaced by hostile ones).

Documented errors: Denied (400) from parse_json, ValidationError from the validation. A body that passes must be
what the store and the scope rely on: finite numbers within their bounds, positions in range, text that SQLite can
store (UTF-8), geometry that serialises back to JSON.
"""

from __future__ import annotations

import copy
import json
import math
import struct
from datetime import UTC, datetime
from typing import Any

from fuzz.targets import Reader
from signaling.access import Denied
from signaling.incidents import (
    MAX_BUFFER_M,
    MAX_NEAREST,
    MAX_RADIUS_M,
    MAX_VERTICES,
    Incident,
    Spec,
    ValidationError,
    parse_create,
    parse_geometry,
    parse_patch,
)
from signaling.json_body import MAX_DEPTH, parse_json

NOW = 1_800_000_000.0  # a fixed "now", so that an `until` in a seed stays valid


def _until(hours: float) -> str:
    return datetime.fromtimestamp(NOW + hours * 3600, UTC).isoformat()


RING = [[126.97, 37.56], [126.98, 37.56], [126.98, 37.57], [126.97, 37.57], [126.97, 37.56]]
BODIES: list[dict[str, Any]] = [  # the shapes the tests send (tests/helpers/access.py, test_access_units.py)
    {"service": "112-video", "basis": "Personal Information Protection Act art. 25(1)4 (emergency)",
     "until": _until(2), "geometry": {"type": "Point", "coordinates": [126.978, 37.5665]}, "radius_m": 500},
    {"service": "112-video", "basis": "PIPA art. 25", "until": _until(1), "shared_with": ["fire-119"],
     "geometry": {"type": "Point", "coordinates": [126.978, 37.5665]}},
    {"service": "disaster", "basis": "Disaster Act art. 74", "until": _until(12),
     "geometry": {"type": "Polygon", "coordinates": [RING]}, "nearest": 20, "summary": "flooding"},
    {"service": "119-dispatch", "basis": "Fire Services Act", "until": _until(3), "buffer_m": 150,
     "geometry": {"type": "LineString", "coordinates": [[126.97, 37.56], [126.99, 37.58], [127.0, 37.59]]}},
    {"service": "vulnerable", "basis": "Missing persons act", "until": _until(6), "radius_m": 300,
     "geometry": {"type": "Point", "coordinates": [126.978, 37.5665]},
     "photo": {"content_type": "image/jpeg", "data": "/9j/4GZha2UtanBlZw=="}},
    {"geometry": {"type": "Point", "coordinates": [126.979, 37.567]}, "summary": "moved", "until": _until(4)},
]  # fmt: skip
MOVING = Incident(
    id="inc-fuzz", service="vulnerable", basis="Missing persons act", owner="police-112", owner_client="gt-1",
    shared_with=(), geometry={"type": "Point", "coordinates": [126.978, 37.5665]}, radius_m=300, nearest=10,
    buffer_m=100, until=NOW + 3600, created_at=NOW - 600, updated_at=NOW - 600,
)  # fmt: skip
NASTY: list[Any] = [
    10**400, -(10**400), 2**63, -1, 0, 1e308, -0.0, float("nan"), float("inf"), True, False, None, "", " ", "x" * 1001,
    "\ud800", "\x00", "fire-119", "FIRE", [], {}, [1, 2], [180, 90], [180.0000001, 0], [[1, 2]], [[[1, 2]]],
    [[0, 0]] * (MAX_VERTICES + 1), [RING] * 17, "2026-13-01T00:00:00Z", "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00-23:59", _until(25), _until(-1), "2026-11-05T18:00:00", "Point", "Polygon", "LineString",
    {"type": "Point"}, {"content_type": "image/png", "data": "===="}, "A" * 8, [["fire-119"] * 33],
]  # fmt: skip


def _value(r: Reader, depth: int = 0) -> Any:
    """A hostile JSON value: one of NASTY, or one the input spells (a number, a string of any code points, a list)."""
    op = r.u8()
    if op < 160 or depth > 3:
        value = NASTY[op % len(NASTY)]
        return copy.deepcopy(value) if isinstance(value, list | dict) else value  # mutations must not reach NASTY
    if op < 190:
        return struct.unpack("<d", r.take(8).ljust(8, b"\0"))[0]
    if op < 210:
        return int.from_bytes(r.take(1 + r.u8() % 200), "big") * (-1 if op & 1 else 1)
    if op < 235:
        raw = r.take(2 * (r.u8() % 64))
        return raw[: len(raw) // 2 * 2].decode("utf-16-le", "surrogatepass")  # any code point, lone surrogates too
    return [_value(r, depth + 1) for _ in range(r.u8() % 6)]


def _mutate(body: Any, r: Reader) -> Any:
    """Replace, add or delete one value somewhere in `body` (a path the input walks)."""
    node = body
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys:
            return body
        key = keys[r.u8() % len(keys)]
        child = node[key]
        if isinstance(child, dict | list) and child and r.u8() & 1:
            node = child
            continue
        action = r.u8() % 4
        if action == 0 and isinstance(node, dict):
            del node[key]
        elif action == 1 and isinstance(node, dict):
            node[("type", "coordinates", "radius_m", "until", "photo", "extra", "nearest")[r.u8() % 7]] = _value(r)
        else:
            node[key] = _value(r)
        return body


def incident_body(data: bytes) -> tuple[Any, int]:
    r = Reader(data)
    first = r.u8()
    body = json.loads(json.dumps(BODIES[first % len(BODIES)]))  # a deep copy
    for _ in range(r.u8() % 8):
        body = _mutate(body, r)
    return body, first


def incident(data: bytes) -> None:
    body, first = incident_body(data)
    validate(body)
    if isinstance(body, dict) and "geometry" in body:
        try:
            _check_geometry(parse_geometry(body["geometry"], ("Point", "LineString", "Polygon")[: 1 + first % 3]))
        except ValidationError:
            pass


def validate(body: Any) -> None:
    """parse_create and parse_patch (of a moving point) on one body: ValidationError or a sound result."""
    try:
        _check_spec(parse_create(body, now=NOW))
    except ValidationError:
        pass
    try:
        _check_changes(parse_patch(body, MOVING, now=NOW))
    except ValidationError:
        pass


def _storable(text: str) -> None:
    text.encode("utf-8")  # SQLite binds str as UTF-8: a lone surrogate would fail the INSERT (a 500)


def _check_geometry(geometry: dict[str, Any]) -> None:
    assert geometry["type"] in ("Point", "LineString", "Polygon")
    coords = geometry["coordinates"]
    parts = [[coords]] if geometry["type"] == "Point" else [coords] if geometry["type"] == "LineString" else coords
    for part in parts:
        for lon, lat in part:
            assert type(lon) is float and type(lat) is float and -180 <= lon <= 180 and -90 <= lat <= 90
    json.dumps(geometry, allow_nan=False)


def _check_spec(spec: Spec) -> None:
    assert (
        1 <= spec.radius_m <= MAX_RADIUS_M and 1 <= spec.buffer_m <= MAX_BUFFER_M and 1 <= spec.nearest <= MAX_NEAREST
    )
    assert math.isfinite(spec.until) and spec.until > NOW
    for text in (spec.basis, spec.summary, *spec.shared_with):
        _storable(text)
    _check_geometry(spec.geometry)


def _check_changes(changes: dict[str, Any]) -> None:
    if "geometry" in changes:
        _check_geometry(changes["geometry"])
    if "summary" in changes:
        _storable(changes["summary"])
    if "until" in changes:
        assert math.isfinite(changes["until"])


def _depth(value: Any) -> int:
    """Nesting of arrays and objects, iteratively (the reference for parse_json's vectorised count)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level + 1)
            stack += [(child, level + 1) for child in (node.values() if isinstance(node, dict) else node)]
    return deepest


def json_body(data: bytes) -> None:
    try:
        body = parse_json(data)
    except Denied as exc:
        assert exc.status == 400, exc
        return
    assert _depth(body) <= MAX_DEPTH
    validate(body)


def incident_seeds() -> list[bytes]:
    return [bytes([i, 0]) for i in range(len(BODIES))] + [bytes([2, 1, 0, 1, 0, 0, 3]), bytes([0, 2, 1, 0, 7, 3])]


def json_seeds() -> list[bytes]:
    out = [json.dumps(b).encode() for b in BODIES]
    out += [b"[" * 40 + b"]" * 40, b'{"a": "[[[[\\"]]]]"}', b'{"basis": "\\ud800", "service": "disaster"}']
    return out
