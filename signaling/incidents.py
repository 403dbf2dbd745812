"""Incidents: why a camera may be viewed, by whom, where and until when.

An incident has an id in the style of NENA EIDO (`urn:emergency:uid:incidentid:<random>:<domain>`), a
service, a legal basis, an owning agency and the agencies it is shared with, a GeoJSON geometry
(`[lon, lat]`), a time window (`until`) and a status. Its scope (the cameras it opens) is computed by the
server from the geometry and is cached here; it is recomputed when the geometry moves (a vulnerable
person's latest position) or the camera index is rebuilt.

Validation errors name the field (`ValidationError.field`), which the API returns in its 400 body.

Limits that keep one request from costing the server seconds (the scope is computed over every camera):
a geometry has at most MAX_VERTICES positions in all, a Polygon at most MAX_RINGS rings, its JSON at most
MAX_GEOMETRY_BYTES, its bounding box at most MAX_EXTENT_M on a side and its length (a route's, or all of a
polygon's rings together) at most MAX_LENGTH_M.

Only the owning agency extends the window, changes who it is shared with, or moves the point; the window
never reaches past `created_at + max_window_s` (Incidents' setting, default MAX_WINDOW_S). A moving point
(a vulnerable person's phone) moves at most MOVE_SLACK_M (one cell-tower fix's error) plus MAX_SPEED_MPS
(a car on an urban expressway) times the seconds since its last move: a wild jump is refused (400), the
app sends the intermediate fix or opens a new incident. `audit_changes` records old and new values.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from signaling.db import is_utf8, write
from signaling.scope import CameraIndex, Hit, ScopeIndex, footprint

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    until REAL NOT NULL,
    updated_at REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (status, until);
CREATE TABLE IF NOT EXISTS incident_photos (
    incident_id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL,
    updated_at REAL NOT NULL
);
"""

SERVICES = ("112-video", "112-dispatch", "119-dispatch", "disaster", "vulnerable")
# Per service: default radius (Point), default nearest K, and the geometries that make sense for it.
POLICY: dict[str, tuple[float, int, tuple[str, ...]]] = {
    "112-video": (500.0, 4, ("Point",)),
    "112-dispatch": (500.0, 4, ("Point",)),
    "119-dispatch": (300.0, 20, ("Point", "LineString")),
    "disaster": (1000.0, 200, ("Polygon", "Point")),
    "vulnerable": (300.0, 6, ("Point",)),
}
MAX_RADIUS_M = 5000.0
MAX_BUFFER_M = 500.0  # a 1 km corridor; wider, a 1,000-position route costs the scope tens of ms
DEFAULT_BUFFER_M = 100.0
MAX_NEAREST = 500
MAX_WINDOW_S = 24 * 3600  # from creation, extensions included: an incident is not a standing permission
MAX_VERTICES = 1000
MAX_RINGS = 16
MAX_GEOMETRY_BYTES = 64 * 1024
MAX_EXTENT_M = 50_000.0  # Seoul is ~37 km across
MAX_LENGTH_M = 100_000.0
MOVE_SLACK_M = 2000.0
MAX_SPEED_MPS = 50.0  # 180 km/h
MAX_PHOTO_BYTES = 256 * 1024
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")
AGENCY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
CREATE_FIELDS = {"service", "basis", "shared_with", "until", "geometry", "radius_m", "nearest", "buffer_m", "photo"}
CREATE_FIELDS |= {"summary"}
PATCH_FIELDS = {"geometry", "until", "shared_with", "photo", "summary"}


class ValidationError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    service: str
    basis: str
    owner: str  # agency slug
    owner_client: str
    shared_with: tuple[str, ...]
    geometry: dict[str, Any]
    radius_m: float
    nearest: int
    buffer_m: float
    until: float
    summary: str = ""
    status: str = "active"
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    closed_at: float | None = None
    closed_reason: str | None = None
    photo_bytes: int = 0
    moved_at: float | None = None  # the last move of a moving point (None: never moved)

    @property
    def agencies(self) -> frozenset[str]:
        return frozenset((self.owner, *self.shared_with))

    def is_open(self, now: float | None = None) -> bool:
        return self.status == "active" and self.until > (time.time() if now is None else now)

    def public(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k not in ("photo_bytes", "moved_at")}
        doc["shared_with"] = list(self.shared_with)
        doc["until"] = rfc3339(self.until)
        for key in ("created_at", "updated_at", "closed_at"):
            doc[key] = rfc3339(doc[key]) if doc[key] is not None else None
        doc["open"] = self.is_open()
        photo_url = f"/api/incidents/{self.id}/photo"
        doc["photo"] = {"bytes": self.photo_bytes, "url": photo_url} if self.photo_bytes else None
        return doc


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- validation --------------------------------------------------------------------------------------------


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise ValidationError(name, "must be a number")
    if not lo <= value <= hi:
        raise ValidationError(name, f"must be between {lo:g} and {hi:g}")
    return float(value)


def parse_until(value: Any, now: float, latest: float) -> float:
    """`latest`: the end of the longest window the incident may have (its creation + the maximum window)."""
    if not isinstance(value, str):
        raise ValidationError("until", "required: an RFC 3339 time with a timezone, e.g. 2026-11-05T18:00:00+09:00")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("until", f"not an RFC 3339 time: {value!r}") from None
    if when.tzinfo is None:
        raise ValidationError("until", "must carry a timezone (Z or +09:00)")
    ts = when.timestamp()
    if ts <= now:
        raise ValidationError("until", "must be in the future")
    if ts > latest:
        raise ValidationError("until", f"at most {rfc3339(latest)}: an incident lasts at most the maximum window")
    return ts


def _position(value: Any, name: str) -> list[float]:
    if not isinstance(value, list) or len(value) != 2 or not all(_finite(v) for v in value):
        raise ValidationError(name, "a position is [lon, lat] (two numbers)")
    lon, lat = value  # compared before float(): float(10**400) raises OverflowError
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValidationError(name, f"[lon, lat] out of range: {value}")
    return [float(lon), float(lat)]


def _finite(v: Any) -> bool:
    """A JSON number that is not NaN or infinite (an int of any size is finite: math.isfinite would overflow)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and (isinstance(v, int) or math.isfinite(v))


def _positions(value: Any, name: str, minimum: int) -> list[list[float]]:
    if not isinstance(value, list) or not minimum <= len(value) <= MAX_VERTICES:
        raise ValidationError(name, f"a list of {minimum} to {MAX_VERTICES} [lon, lat] positions")
    return [_position(p, f"{name}[{i}]") for i, p in enumerate(value)]


def parse_geometry(value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The validated geometry (only its type and coordinates). Counts are checked before positions are."""
    if not isinstance(value, dict):
        raise ValidationError("geometry", "required: a GeoJSON geometry object")
    kind = value.get("type")
    if kind not in allowed:
        raise ValidationError("geometry.type", f"must be one of {', '.join(allowed)} for this service")
    geometry = _parse_coordinates(kind, value.get("coordinates"))
    if len(json.dumps(value, separators=(",", ":"))) > MAX_GEOMETRY_BYTES:  # e.g. foreign members
        raise ValidationError("geometry", f"at most {MAX_GEOMETRY_BYTES} bytes of JSON")
    return geometry


def _parse_coordinates(kind: str, coords: Any) -> dict[str, Any]:
    name = "geometry.coordinates"
    if kind == "Point":
        return {"type": kind, "coordinates": _position(coords, name)}
    if kind == "LineString":
        line = _positions(coords, name, 2)
        _check_size([line], name, "route")
        return {"type": kind, "coordinates": line}
    if not isinstance(coords, list) or not 1 <= len(coords) <= MAX_RINGS:
        raise ValidationError(name, f"a Polygon is a list of 1 to {MAX_RINGS} linear rings")
    if sum(len(ring) if isinstance(ring, list) else 0 for ring in coords) > MAX_VERTICES:
        raise ValidationError(name, f"at most {MAX_VERTICES} positions in all rings together")
    rings = [_positions(ring, f"{name}[{i}]", 4) for i, ring in enumerate(coords)]
    for i, ring in enumerate(rings):
        if ring[0] != ring[-1]:
            raise ValidationError(f"{name}[{i}]", "a linear ring must end where it starts")
    _check_size(rings, name, "rings' perimeter")
    return {"type": kind, "coordinates": rings}


def _check_size(parts: list[list[list[float]]], name: str, what: str) -> None:
    """The bounding box and length bounds, in metres on a local plane around the geometry's first position."""
    width, height, length = footprint(parts)
    if max(width, height) > MAX_EXTENT_M:
        raise ValidationError(name, f"spans {max(width, height) / 1000:.0f} km; at most {MAX_EXTENT_M / 1000:g} km")
    if length > MAX_LENGTH_M:
        raise ValidationError(name, f"the {what} is {length / 1000:.0f} km long; at most {MAX_LENGTH_M / 1000:g} km")


def _step_m(a: list[float], b: list[float]) -> float:
    return footprint([[a, b]])[2]


def _check_move(incident: Incident, geometry: dict[str, Any], now: float) -> None:
    since = max(0.0, now - (incident.moved_at or incident.created_at))
    allowed = MOVE_SLACK_M + MAX_SPEED_MPS * since
    step = _step_m(incident.geometry["coordinates"], geometry["coordinates"])
    if step > allowed:
        raise ValidationError(
            "geometry", f"moved {step:.0f} m in {since:.0f} s; at most {allowed:.0f} m "
            f"({MOVE_SLACK_M:g} m + {MAX_SPEED_MPS:g} m/s since the last move): send the fixes in between",
        )  # fmt: skip


def parse_shared_with(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 32:
        raise ValidationError("shared_with", "a list of at most 32 agency ids")
    for i, agency in enumerate(value):
        if not isinstance(agency, str) or not AGENCY_RE.match(agency):
            raise ValidationError(f"shared_with[{i}]", "an agency id such as fire-119")
    return tuple(dict.fromkeys(value))


def parse_photo(value: Any) -> tuple[str, bytes]:
    if not isinstance(value, dict):
        raise ValidationError("photo", 'an object {"content_type": "image/jpeg", "data": "<base64>"}')
    if value.get("content_type") not in PHOTO_TYPES:
        raise ValidationError("photo.content_type", f"one of {', '.join(PHOTO_TYPES)}")
    data = value.get("data")
    if not isinstance(data, str) or len(data) > MAX_PHOTO_BYTES * 4 // 3 + 8:
        raise ValidationError("photo.data", f"base64, at most {MAX_PHOTO_BYTES} bytes decoded")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("photo.data", "not valid base64") from None
    if not raw or len(raw) > MAX_PHOTO_BYTES:
        raise ValidationError("photo.data", f"1 to {MAX_PHOTO_BYTES} bytes decoded")
    return str(value["content_type"]), raw


def _text(body: dict[str, Any], name: str, required: bool, limit: int) -> str:
    value = body.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit or not is_utf8(value):
        raise ValidationError(name, f"{'required: ' if required else ''}a string of at most {limit} characters")
    return value.strip()


def _unknown(body: Any, allowed: set[str]) -> None:
    if not isinstance(body, dict):
        raise ValidationError("body", "a JSON object")
    for key in body:
        if key not in allowed:
            raise ValidationError(key, "unknown field")


@dataclass(frozen=True, slots=True)
class Spec:
    """A validated creation request."""

    service: str
    basis: str
    shared_with: tuple[str, ...]
    until: float
    geometry: dict[str, Any]
    radius_m: float
    nearest: int
    buffer_m: float
    summary: str
    photo: tuple[str, bytes] | None


def parse_create(body: Any, now: float | None = None, max_window_s: float = MAX_WINDOW_S) -> Spec:
    now = time.time() if now is None else now
    _unknown(body, CREATE_FIELDS)
    service = body.get("service")
    if service not in SERVICES:
        raise ValidationError("service", f"required: one of {', '.join(SERVICES)}")
    radius, nearest, geometries = POLICY[service]
    photo = None
    if "photo" in body:
        if service != "vulnerable":
            raise ValidationError("photo", "only vulnerable-person incidents carry a photo")
        photo = parse_photo(body["photo"])
    return Spec(
        service=service,
        basis=_text(body, "basis", True, 500),
        shared_with=parse_shared_with(body.get("shared_with", [])),
        until=parse_until(body.get("until"), now, now + max_window_s),
        geometry=parse_geometry(body.get("geometry"), geometries),
        radius_m=_number(body, "radius_m", radius, 1, MAX_RADIUS_M),
        nearest=int(_number(body, "nearest", nearest, 1, MAX_NEAREST)),
        buffer_m=_number(body, "buffer_m", DEFAULT_BUFFER_M, 1, MAX_BUFFER_M),
        summary=_text(body, "summary", False, 1000),
        photo=photo,
    )


OWNER_FIELDS = ("geometry", "until", "shared_with")  # moving, extending and re-sharing are the owner's


def parse_patch(
    body: Any, incident: Incident, now: float | None = None, max_window_s: float = MAX_WINDOW_S
) -> dict[str, Any]:
    """The changes a PATCH asks for (validated), as Incident field values; a `photo` key carries the
    (content_type, bytes) to store. Who may ask for them is the caller's check (OWNER_FIELDS)."""
    now = time.time() if now is None else now
    _unknown(body, PATCH_FIELDS)
    changes: dict[str, Any] = {}
    if "geometry" in body:
        if incident.service != "vulnerable":
            raise ValidationError("geometry", "only a vulnerable-person incident moves")
        changes["geometry"] = parse_geometry(body["geometry"], ("Point",))
        _check_move(incident, changes["geometry"], now)
    if "photo" in body:
        if incident.service != "vulnerable":
            raise ValidationError("photo", "only vulnerable-person incidents carry a photo")
        changes["photo"] = parse_photo(body["photo"])
    if "until" in body:
        changes["until"] = parse_until(body["until"], now, incident.created_at + max_window_s)
    if "shared_with" in body:
        changes["shared_with"] = parse_shared_with(body["shared_with"])
    if "summary" in body:
        changes["summary"] = _text(body, "summary", False, 1000)
    if not changes:
        raise ValidationError("body", f"nothing to change: send one of {', '.join(sorted(PATCH_FIELDS))}")
    return changes


# -- store ---------------------------------------------------------------------------------------------------


class Incidents:
    def __init__(
        self, db: sqlite3.Connection, scope: ScopeIndex, urn_domain: str = "goldentime.seoul",
        max_window_s: float = MAX_WINDOW_S,
    ) -> None:  # fmt: skip
        self.db = db
        self.max_window_s = max_window_s
        self.scope_index = scope
        self.urn_domain = urn_domain
        db.executescript(SCHEMA)
        self._cache: dict[str, Incident] = {}
        self._scopes: dict[str, tuple[int, list[Hit], frozenset[str]]] = {}
        self._prepared: dict[str, tuple[int, list[Hit]]] = {}  # computed off the loop, for an incident to come

    def new_id(self) -> str:
        return f"urn:emergency:uid:incidentid:{secrets.token_hex(16)}:{self.urn_domain}"

    def create(self, spec: Spec, owner: str, owner_client: str) -> Incident:
        now = time.time()
        photo = spec.photo
        incident = Incident(
            id=self.new_id(),
            service=spec.service,
            basis=spec.basis,
            owner=owner,
            owner_client=owner_client,
            shared_with=tuple(a for a in spec.shared_with if a != owner),
            geometry=spec.geometry,
            radius_m=spec.radius_m,
            nearest=spec.nearest,
            buffer_m=spec.buffer_m,
            until=spec.until,
            summary=spec.summary,
            created_at=now,
            updated_at=now,
            photo_bytes=len(photo[1]) if photo else 0,
        )
        self._save(incident, photo)
        return incident

    def _save(self, incident: Incident, photo: tuple[str, bytes] | None = None) -> None:
        doc = json.dumps({**asdict(incident), "shared_with": list(incident.shared_with)})
        with write(self.db):
            self.db.execute(
                "INSERT INTO incidents (id, owner, status, until, updated_at, doc) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET status=excluded.status, until=excluded.until, "
                "updated_at=excluded.updated_at, doc=excluded.doc",
                (incident.id, incident.owner, incident.status, incident.until, incident.updated_at, doc),
            )
            if photo is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO incident_photos VALUES (?,?,?,?)",
                    (incident.id, photo[0], photo[1], incident.updated_at),
                )
        self._cache[incident.id] = incident
        self._scopes.pop(incident.id, None)

    def get(self, incident_id: str) -> Incident | None:
        incident = self._cache.get(incident_id)
        if incident is None:
            row = self.db.execute("SELECT doc FROM incidents WHERE id=?", (incident_id,)).fetchone()
            if row is None:
                return None
            doc = json.loads(row[0])
            incident = Incident(**{**doc, "shared_with": tuple(doc["shared_with"])})
            self._cache[incident_id] = incident
        return incident

    def update(self, incident: Incident, changes: dict[str, Any]) -> Incident:
        photo = changes.pop("photo", None)
        if photo is not None:
            changes["photo_bytes"] = len(photo[1])
        if "shared_with" in changes:
            changes["shared_with"] = tuple(a for a in changes["shared_with"] if a != incident.owner)
        now = time.time()
        if "geometry" in changes:
            changes["moved_at"] = now  # the next move's allowance counts from here
        updated = replace(incident, **changes, updated_at=now)
        self._save(updated, photo)
        return updated

    def close(self, incident: Incident, reason: str = "closed") -> Incident:
        now = time.time()
        closed = replace(incident, status="closed", closed_at=now, closed_reason=reason, updated_at=now)
        self._save(closed)
        return closed

    def open_incidents(self) -> list[Incident]:
        rows = self.db.execute("SELECT id FROM incidents WHERE status='active'").fetchall()
        return [i for i in (self.get(r[0]) for r in rows) if i is not None]

    def due_to_expire(self, now: float) -> list[Incident]:
        """Active incidents whose window has ended (the sweep closes them)."""
        return [i for i in self._cache.values() if i.status == "active" and i.until <= now]

    def photo(self, incident_id: str) -> tuple[str, bytes] | None:
        row = self.db.execute(
            "SELECT content_type, data FROM incident_photos WHERE incident_id=?", (incident_id,)
        ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    # -- scope ---------------------------------------------------------------------------------------------

    def cameras(self, incident: Incident) -> list[Hit]:
        """The cameras in scope, nearest first (cached until the geometry or the camera index changes)."""
        return self._scope(incident)[1]

    def in_scope(self, incident: Incident, camera_id: str) -> bool:
        return camera_id in self._scope(incident)[2]

    def _scope(self, incident: Incident) -> tuple[int, list[Hit], frozenset[str]]:
        version = self.scope_index.version
        cached = self._scopes.get(incident.id)
        if cached is not None and cached[0] == version:
            return cached
        prepared = self._prepared.pop(_scope_key(incident.geometry, incident.radius_m, incident.nearest,
                                                 incident.buffer_m), None)  # fmt: skip
        if prepared is not None and prepared[0] == version:
            hits = prepared[1]
        else:
            hits = compute_scope(self.scope_index, incident)
        entry = (version, hits, frozenset(h[0] for h in hits))
        self._scopes[incident.id] = entry
        return entry

    async def prepare(self, spec: Spec) -> None:
        """Compute the scope of an incident about to be created from `spec` in a thread, so a large route or
        polygon (a few to tens of ms over a city's cameras) does not stall the event loop."""
        if spec.geometry["type"] == "Point":
            return  # well under a millisecond
        version, index = self.scope_index.version, self.scope_index.index
        hits = await asyncio.to_thread(query, index, spec.geometry, spec.radius_m, spec.nearest, spec.buffer_m)
        while len(self._prepared) >= 64:  # prepared for requests that then failed: forget the oldest
            self._prepared.pop(next(iter(self._prepared)))
        self._prepared[_scope_key(spec.geometry, spec.radius_m, spec.nearest, spec.buffer_m)] = (version, hits)

    async def rescope(self) -> int:
        """After the camera index was rebuilt: every active incident's scope, computed in a thread.
        Returns how many were computed (an incident changed meanwhile keeps being computed on demand)."""
        version, index = self.scope_index.version, self.scope_index.index
        todo = [i for i in self._cache.values() if i.status == "active"]

        def run() -> list[list[Hit]]:
            return [query(index, i.geometry, i.radius_m, i.nearest, i.buffer_m) for i in todo]

        done = 0
        for incident, hits in zip(todo, await asyncio.to_thread(run), strict=True):
            if self.scope_index.version == version and self._cache.get(incident.id) is incident:
                self._scopes[incident.id] = (version, hits, frozenset(h[0] for h in hits))
                done += 1
        return done


def _scope_key(geometry: dict[str, Any], radius_m: float, nearest: int, buffer_m: float) -> str:
    return json.dumps([geometry, radius_m, nearest, buffer_m], sort_keys=True)


def query(index: CameraIndex, geometry: dict[str, Any], radius_m: float, nearest: int, buffer_m: float) -> list[Hit]:
    coords = geometry["coordinates"]
    if geometry["type"] == "Point":
        return index.near_point(coords[0], coords[1], radius_m, nearest)
    if geometry["type"] == "LineString":
        return index.near_line(coords, buffer_m, nearest)
    return index.in_polygon(coords, nearest)


def compute_scope(scope: ScopeIndex, incident: Incident) -> list[Hit]:
    return query(scope.index, incident.geometry, incident.radius_m, incident.nearest, incident.buffer_m)


def audit_changes(old: Incident, new: Incident, fields: list[str]) -> dict[str, dict[str, Any]]:
    """Old and new value of each changed field, as the audit records them (a photo by its size)."""

    def value(incident: Incident, name: str) -> Any:
        if name == "until":
            return rfc3339(incident.until)
        if name == "geometry":
            return incident.geometry
        if name == "shared_with":
            return list(incident.shared_with)
        if name == "photo":
            return {"bytes": incident.photo_bytes}
        return getattr(incident, name)

    return {name: {"old": value(old, name), "new": value(new, name)} for name in fields}
