"""The camera API: what a caller may know about cameras, never their URLs or credentials.

Nothing is anonymous, and nobody sees the whole city but its video administrators. An operator's stream token
lists the cameras its incident opens now, nearest first, with distances (what the console shows); an agency app
with client credentials lists the cameras in the scope of its agency's open incidents, each with the incidents
that show it; an admin client (role `admin`) lists every camera; an auditor is refused (403). See access.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web

from signaling.access import ACCESS
from signaling.edge import bearer, caller
from signaling.incident_api import authenticate
from signaling.tokens import MAX_TOKEN_CHARS

PUBLIC_FIELDS = ("id", "name", "district", "lat", "lon", "codec", "state")

CameraSource = Callable[[], list[dict[str, Any]]]


def public(camera: dict[str, Any]) -> dict[str, Any]:
    return {k: camera[k] for k in PUBLIC_FIELDS if k in camera}


def _is_stream_token(request: web.Request) -> bool:
    """Route by the token's audience; the signature is checked by whichever verifier takes it."""
    token = bearer(request)
    if token is None:
        return False
    if len(token) > MAX_TOKEN_CHARS:
        return True  # the stream verifier refuses it (audited) before anything parses it
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
            grant = access.verify_stream(bearer(request), caller(request), None)
            distances = dict(access.incidents.cameras(grant.incident))
            listed = [
                {**public(c), "distance_m": round(distances[c["id"]], 1)} for c in cameras() if c["id"] in distances
            ]
            return web.json_response(sorted(listed, key=lambda c: c["distance_m"]))
        client = await authenticate(request)
        access.check_camera_list(caller(request), client)
        visible = access.visible_cameras(client)
        if visible is None:
            return web.json_response([public(c) for c in cameras()])
        return web.json_response(
            [{**public(c), "incidents": visible[c["id"]]} for c in cameras() if c["id"] in visible]
        )

    return table
