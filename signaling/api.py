"""The public camera API: what a viewer may know about a camera, never its URL or credentials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

PUBLIC_FIELDS = ("id", "name", "district", "lat", "lon", "codec", "state")

CameraSource = Callable[[], list[dict[str, Any]]]


def public(camera: dict[str, Any]) -> dict[str, Any]:
    return {k: camera[k] for k in PUBLIC_FIELDS if k in camera}


def routes(cameras: CameraSource) -> web.RouteTableDef:
    table = web.RouteTableDef()

    @table.get("/api/cameras")
    async def list_cameras(request: web.Request) -> web.Response:
        return web.json_response([public(c) for c in cameras()])

    return table
