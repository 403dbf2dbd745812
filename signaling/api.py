"""The camera API: what a caller may know about cameras, never their URLs or credentials.

Nothing is anonymous. An operator's stream token lists the cameras its incident opens now, nearest first,
with distances (what the console shows); an agency app or admin with client credentials sees the whole
registry's public fields (a map of the city's cameras holds no video).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web

from signaling.access import ACCESS, bearer
from signaling.incident_api import authenticate

PUBLIC_FIELDS = ("id", "name", "district", "lat", "lon", "codec", "state")

CameraSource = Callable[[], list[dict[str, Any]]]


def public(camera: dict[str, Any]) -> dict[str, Any]:
    return {k: camera[k] for k in PUBLIC_FIELDS if k in camera}


def _is_stream_token(request: web.Request) -> bool:
    """Route by the token's audience; the signature is checked by whichever verifier takes it."""
    token = bearer(request)
    if token is None:
        return False
    try:
        audience = jwt.decode(token, options={"verify_signature": False}).get("aud")
    except jwt.InvalidTokenError:
        return False
    return bool(audience == request.app[ACCESS].settings.tokens.stream_audience)


def routes(cameras: CameraSource) -> web.RouteTableDef:
    table = web.RouteTableDef()

    @table.get("/api/cameras")
    async def list_cameras(request: web.Request) -> web.Response:
        access = request.app[ACCESS]
        if _is_stream_token(request):
            grant = access.verify_stream(request, None)
            distances = dict(access.incidents.cameras(grant.incident))
            listed = [
                {**public(c), "distance_m": round(distances[c["id"]], 1)} for c in cameras() if c["id"] in distances
            ]
            return web.json_response(sorted(listed, key=lambda c: c["distance_m"]))
        await authenticate(request)
        return web.json_response([public(c) for c in cameras()])

    return table
