"""Helpers for tests that need access: a registered agency client, an incident around a camera, a token.

They use the access layer's Python API (the same calls the HTTP API makes), so a WHEP test can get a
valid token in one line; the HTTP paths themselves are tested in test_incident_api.py.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from signaling.access import Access, AccessSettings
from signaling.clients import Client
from signaling.incidents import Incident, parse_create

# Cheap scrypt for tests (the production cost is 2^14); the stored hash records the cost used.
FAST = AccessSettings(scrypt_n=2**4)


def until(seconds: float = 3600) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


def agency(access: Access, slug: str = "police-112", role: str = "agency") -> tuple[Client, str]:
    return access.add_client(slug, f"{slug} test app", role)


def incident_around(
    access: Access, client: Client, lon: float, lat: float, radius_m: float = 500, **extra: Any
) -> Incident:
    body = {"service": "112-video", "basis": "Personal Information Protection Act art. 25(1)4 (emergency)",
            "until": until(), "geometry": {"type": "Point", "coordinates": [lon, lat]}, "radius_m": radius_m,
            **extra}  # fmt: skip
    return access.create_incident(parse_create(body), client, "test operator", "127.0.0.1")


def grant(access: Access, camera: dict[str, Any], operator: str = "officer kim", ttl_s: int | None = None) -> str:
    """A stream token that opens `camera` (a dict with id, lat, lon): new client, incident around it."""
    client, _ = agency(access)
    access.refresh_cameras()
    incident = incident_around(access, client, float(camera["lon"]), float(camera["lat"]), 50)
    token, _, hits = access.issue_stream_token(incident, client, operator, ttl_s, "127.0.0.1")
    assert camera["id"] in {h[0] for h in hits}, hits
    return token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def admin(access: Access) -> dict[str, str]:
    """Basic credentials of a new city video admin (role `admin`: ops calls, every camera)."""
    client, secret = access.add_client("city-video", "city video admin", "admin")
    return basic(client.client_id, secret)


async def until_true(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until `condition()` held (e.g. a revoked token's views ended); AssertionError past `seconds`."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0
