"""Camera registry (SQLite): where each camera is and how to reach it.

Credentials are stored apart from the URL and never leave the server: `Camera.public()` is the only shape
that APIs and pages see.
"""

from __future__ import annotations

import csv
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

SCHEMA = """
CREATE TABLE IF NOT EXISTS cameras (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    district TEXT NOT NULL DEFAULT '',
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    url TEXT NOT NULL,
    username TEXT,
    password TEXT,
    substream_url TEXT
);
"""

CSV_REQUIRED = ("id", "name", "district", "lat", "lon", "url")


class RegistryError(ValueError):
    """A camera record is invalid (says which field and why)."""


@dataclass(frozen=True, slots=True)
class Camera:
    id: str
    name: str
    district: str
    lat: float
    lon: float
    url: str  # without credentials
    username: str | None = None
    password: str | None = None
    substream_url: str | None = None

    def public(self) -> dict[str, object]:
        """What clients may see: never URLs or credentials."""
        return {
            "id": self.id,
            "name": self.name,
            "district": self.district,
            "lat": self.lat,
            "lon": self.lon,
            "has_substream": self.substream_url is not None,
        }


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """rtsp://user:pass@host/path -> (rtsp://host/path, user, pass)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    password = unquote(parts.password) if parts.password is not None else None
    return clean, unquote(parts.username), password


def make_camera(
    id: str, name: str, district: str, lat: object, lon: object, url: str, substream_url: str | None = None
) -> Camera:
    """Validate one record and split credentials out of its URLs."""
    if not id or not id.strip():
        raise RegistryError("id: must not be empty")
    if not name:
        raise RegistryError(f"{id}: name must not be empty")
    lat_f, lon_f = _coordinate(id, "lat", lat, 90.0), _coordinate(id, "lon", lon, 180.0)
    clean, user, password = _rtsp_url(id, "url", url)
    sub = None
    if substream_url:
        sub, sub_user, _ = _rtsp_url(id, "substream_url", substream_url)
        user = user or sub_user
    return Camera(id.strip(), name, district or "", lat_f, lon_f, clean, user, password, sub)


def _coordinate(camera_id: str, field: str, value: object, limit: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RegistryError(f"{camera_id}: {field} is not a number: {value!r}") from None
    if not math.isfinite(number) or abs(number) > limit:
        raise RegistryError(f"{camera_id}: {field} out of range: {value!r}")
    return number


def _rtsp_url(camera_id: str, field: str, url: str) -> tuple[str, str | None, str | None]:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
        raise RegistryError(f"{camera_id}: {field} must be an rtsp:// URL with a host")
    return split_credentials(url.strip())


class Registry:
    """The camera table. One connection per process; all calls are short and synchronous."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def upsert(self, cameras: Iterable[Camera]) -> int:
        rows = [
            (c.id, c.name, c.district, c.lat, c.lon, c.url, c.username, c.password, c.substream_url) for c in cameras
        ]
        with self._db:
            self._db.executemany(
                "INSERT INTO cameras VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "name=excluded.name, district=excluded.district, lat=excluded.lat, lon=excluded.lon, "
                "url=excluded.url, username=excluded.username, password=excluded.password, "
                "substream_url=excluded.substream_url",
                rows,
            )
        return len(rows)

    def add(self, camera: Camera) -> None:
        self.upsert([camera])

    def remove(self, camera_id: str) -> bool:
        with self._db:
            return self._db.execute("DELETE FROM cameras WHERE id=?", (camera_id,)).rowcount > 0

    def get(self, camera_id: str) -> Camera | None:
        row = self._db.execute("SELECT * FROM cameras WHERE id=?", (camera_id,)).fetchone()
        return Camera(*row) if row else None

    def list(self) -> list[Camera]:
        return [Camera(*row) for row in self._db.execute("SELECT * FROM cameras ORDER BY id")]

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM cameras").fetchone()[0])


def read_csv(path: str | Path) -> Iterator[Camera]:
    """Cameras from a CSV with the header id,name,district,lat,lon,url[,substream_url]."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise RegistryError(f"{path}: missing column(s): {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                yield make_camera(
                    row["id"],
                    row["name"],
                    row["district"],
                    row["lat"],
                    row["lon"],
                    row["url"],
                    row.get("substream_url") or None,
                )
            except RegistryError as e:
                raise RegistryError(f"{path}:{line}: {e}") from None


def import_csv(
    registry: Registry, path: str | Path, progress: Callable[[int], None] | None = None, batch: int = 1000
) -> int:
    """Validate every row first (a bad row aborts with its line number and writes nothing), then upsert."""
    cameras = list(read_csv(path))
    for start in range(0, len(cameras), batch):
        done = registry.upsert(cameras[start : start + batch])
        if progress:
            progress(done)
    return len(cameras)
