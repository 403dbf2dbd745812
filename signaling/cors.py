"""CORS for WHEP and the API: browsers on other origins may call us when their origin is allow-listed.

Preflights (OPTIONS with Access-Control-Request-Method) are answered here and never reach a handler; an
origin not on the list gets no CORS headers (a preflight from it gets 403), so the browser blocks it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
EXPOSE_HEADERS = "Location, ETag, Link, Accept-Patch, Accept-Post"
MAX_AGE = "600"


def cors_middleware(origins: Iterable[str]) -> Middleware:
    allowed = {o.rstrip("/") for o in origins}

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        if preflight:
            if origin not in allowed and "*" not in allowed:
                return web.json_response({"error": "origin not allowed", "origin": origin}, status=403)
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = MAX_AGE
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # errors carry CORS headers too, or the browser hides them
                response = exc
        if origin and (origin in allowed or "*" in allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return cors
