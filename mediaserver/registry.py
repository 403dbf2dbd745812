"""Camera registry (SQLite): where each camera is and how to reach it.

Credentials are stored apart from the URL and never leave the server: `Camera.public()` is the only shape
that APIs and pages see. Passwords are sealed at rest under the operator's master key (mediaserver/secret_box.py,
purpose "camera-credentials"): the row holds `$gtbox1$...`, the `Camera` a worker reads holds the clear password.
Rows still in clear (older databases, plain SQL) are sealed when a registry opens. The file is 0600.

Changes are tracked in the database itself, so a running server picks up what any process writes (the
`mediaserver cameras add/import` CLI, a script with plain SQL): triggers give every inserted or changed row
the next value of a revision counter and leave a tombstone for every deleted id. A reader polls
`revision()` (one row) and asks `changes(since)` for the rows and ids past the revision it has seen.
Re-importing an unchanged row writes nothing and bumps nothing.
"""

from __future__ import annotations

import contextlib
import csv
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from mediaserver import private_files, secret_box
from mediaserver.secret_box import SealedColumn, SecretBox

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
CREATE TABLE IF NOT EXISTS registry_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO registry_meta VALUES ('rev', 0);
CREATE TABLE IF NOT EXISTS camera_removed (id TEXT PRIMARY KEY, rev INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS camera_removed_rev ON camera_removed(rev);
"""

FIELDS = ("id", "name", "district", "lat", "lon", "url", "username", "password", "substream_url")
_COLUMNS = ", ".join(FIELDS)
_OLD, _NEW = ", ".join(f"OLD.{f}" for f in FIELDS), ", ".join(f"NEW.{f}" for f in FIELDS)
_NEXT = "UPDATE registry_meta SET v = v + 1 WHERE k = 'rev'"
_REV = "(SELECT v FROM registry_meta WHERE k = 'rev')"
# Triggers run in the writer's transaction, whoever the writer is. The row's own `rev` update names no
# column of `cameras_changed`, so it does not fire it again.
TRACKING = f"""
CREATE INDEX IF NOT EXISTS cameras_rev ON cameras(rev);
CREATE TRIGGER IF NOT EXISTS cameras_added AFTER INSERT ON cameras BEGIN
    {_NEXT};
    UPDATE cameras SET rev = {_REV} WHERE id = NEW.id;
    DELETE FROM camera_removed WHERE id = NEW.id;
END;
CREATE TRIGGER IF NOT EXISTS cameras_changed AFTER UPDATE OF {_COLUMNS} ON cameras
WHEN ({_OLD}) IS NOT ({_NEW}) BEGIN
    {_NEXT};
    UPDATE cameras SET rev = {_REV} WHERE id = NEW.id;
    INSERT OR REPLACE INTO camera_removed SELECT OLD.id, {_REV} WHERE OLD.id IS NOT NEW.id;
END;
CREATE TRIGGER IF NOT EXISTS cameras_removed AFTER DELETE ON cameras BEGIN
    {_NEXT};
    INSERT OR REPLACE INTO camera_removed VALUES (OLD.id, {_REV});
END;
"""

CSV_REQUIRED = ("id", "name", "district", "lat", "lon", "url")
# Deterministic sealing: an unchanged camera re-imported seals to the same text, so it writes nothing.
PASSWORD = SealedColumn("cameras", "id", "password", "camera-credentials", deterministic=True)
SEALED_COLUMNS = (PASSWORD,)
_PASSWORD_AT = FIELDS.index("password")


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
        raise RegistryError(f"{camera_id}: {field} must be an rtsp:// or rtsps:// URL with a host")
    return split_credentials(url.strip())


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in the registry after some revision: rows added or changed, ids removed."""

    revision: int  # the revision these changes bring the reader to
    changed: list[Camera]
    removed: list[str]


class Registry:
    """The camera table. One connection per process; all calls are short and synchronous."""

    def __init__(self, path: str | Path, box: SecretBox | None = None) -> None:
        """`box`: the master key (default: the one configured for this database, see secret_box.load)."""
        self.path = str(path)
        self._db = private_files.connect(self.path)
        self._db.executescript(SCHEMA)
        self._add_rev_column()
        self._db.executescript(TRACKING)
        self._box = box or secret_box.load(self.path)
        self._box.bind(self._db)
        with self._db:
            PASSWORD.seal_clear_rows(self._db, self._box)

    def _row(self, camera: Camera) -> tuple[object, ...]:
        row = [getattr(camera, f) for f in FIELDS]
        if camera.password is not None:
            row[_PASSWORD_AT] = PASSWORD.seal(self._box, camera.id, camera.password)
        return tuple(row)

    def _camera(self, row: tuple[object, ...]) -> Camera:
        """A row as the worker needs it: the password opened (a row written in clear by plain SQL reads as is)."""
        password = row[_PASSWORD_AT]
        if secret_box.is_sealed(password):
            fields = list(row)
            fields[_PASSWORD_AT] = PASSWORD.open(self._box, str(row[0]), str(password))
            row = tuple(fields)
        return Camera(*row)  # type: ignore[arg-type]

    def _add_rev_column(self) -> None:
        """Databases made before change tracking have no `rev` column (two processes may race to add it)."""
        if "rev" in {row[1] for row in self._db.execute("PRAGMA table_info(cameras)")}:
            return
        try:
            with self._db:
                self._db.execute("ALTER TABLE cameras ADD COLUMN rev INTEGER NOT NULL DEFAULT 0")
        except sqlite3.OperationalError as e:
            if "duplicate column" not in str(e):
                raise

    def close(self) -> None:
        self._db.close()

    def upsert(self, cameras: Iterable[Camera]) -> int:
        rows = [self._row(c) for c in cameras]
        changed = ", ".join(f"{f}=excluded.{f}" for f in FIELDS[1:])
        differs = f"({', '.join(FIELDS[1:])}) IS NOT ({', '.join('excluded.' + f for f in FIELDS[1:])})"
        with self._db:
            self._db.executemany(
                f"INSERT INTO cameras ({_COLUMNS}) VALUES ({','.join('?' * len(FIELDS))}) "
                f"ON CONFLICT(id) DO UPDATE SET {changed} WHERE {differs}",
                rows,
            )
        return len(rows)

    def add(self, camera: Camera) -> None:
        self.upsert([camera])

    def remove(self, camera_id: str) -> bool:
        with self._db:
            return self._db.execute("DELETE FROM cameras WHERE id=?", (camera_id,)).rowcount > 0

    def get(self, camera_id: str) -> Camera | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM cameras WHERE id=?", (camera_id,)).fetchone()
        return self._camera(row) if row else None

    def get_many(self, camera_ids: Iterable[str]) -> dict[str, Camera]:
        """The cameras among these ids that exist (ids not registered are simply absent)."""
        found: dict[str, Camera] = {}
        ids = list(dict.fromkeys(camera_ids))
        for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            query = f"SELECT {_COLUMNS} FROM cameras WHERE id IN ({','.join('?' * len(chunk))})"
            found.update((row[0], self._camera(row)) for row in self._db.execute(query, chunk))
        return found

    def revision(self) -> int:
        """The change marker: grows with every camera added, changed or removed, by any process."""
        return int(self._db.execute("SELECT v FROM registry_meta WHERE k='rev'").fetchone()[0])

    def snapshot(self) -> tuple[int, list[Camera]]:
        """Every camera and the revision they are current at (one read transaction)."""
        with self._read():
            return self.revision(), self.list()

    def changes(self, since: int) -> Changes:
        """Cameras added or changed, and ids removed, after revision `since` (one read transaction)."""
        with self._read():
            revision = self.revision()
            if revision == since:
                return Changes(revision, [], [])
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM cameras WHERE rev > ? ORDER BY rev", (since,))
            changed = [self._camera(row) for row in rows]
            removed = [row[0] for row in self._db.execute("SELECT id FROM camera_removed WHERE rev > ?", (since,))]
        return Changes(revision, changed, removed)

    def list(self) -> list[Camera]:
        return [self._camera(row) for row in self._db.execute(f"SELECT {_COLUMNS} FROM cameras ORDER BY id")]

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM cameras").fetchone()[0])

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        """A consistent snapshot across several SELECTs (WAL: writers go on meanwhile)."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")


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
