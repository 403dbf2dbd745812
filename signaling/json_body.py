"""The one reader of JSON request bodies: every JSON endpoint of the front uses `read_json`.

    415  the Content-Type is not application/json
    413  more than `limit` bytes (by Content-Length, or counted while reading a chunked body)
    400  not JSON, or nested deeper than `max_depth` (`{"field": "body"}`)

The body is read to its end, however the client's TCP segments split it (`content.read(n)` returns what
has arrived, not n bytes). Nesting is measured before parsing, with numpy rather than a
recursive walk, so a 100,000-deep `[[[[...` costs a few milliseconds and never reaches json's recursion.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from aiohttp import web

from signaling.access import Denied

MAX_JSON = 512 * 1024  # an incident with a 256 KiB photo in base64
MAX_DEPTH = 32
OFF_LOOP_BYTES = 64 * 1024

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN1, _OPEN2, _CLOSE1, _CLOSE2 = b"[{]}"


async def read_json(request: web.Request, limit: int = MAX_JSON, max_depth: int = MAX_DEPTH) -> Any:
    if request.content_type != "application/json":
        raise Denied(415, "unsupported media type", "expected Content-Type: application/json", "body")
    raw = await read_body(request, limit)
    if len(raw) > OFF_LOOP_BYTES:  # a photo: ~10 ms of scanning and parsing, not on the event loop
        return await asyncio.to_thread(parse_json, raw, max_depth)
    return parse_json(raw, max_depth)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (413 beyond)."""
    if (request.content_length or 0) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
    return b"".join(chunks)


def too_large(limit: int) -> Denied:
    return Denied(413, "request body too large", f"at most {limit} bytes", "body")


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    if depth(raw) > max_depth:
        raise Denied(400, f"JSON nested deeper than {max_depth} levels", "", "body")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Denied(400, f"not valid JSON: {exc}", "", "body") from None


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects, brackets inside strings excluded, in a few vectorised
    passes (~5 ms for 512 KiB of any shape). A quote is a string's edge unless an odd run of backslashes
    precedes it; what lies between an odd and the next even edge is inside a string."""
    code = np.frombuffer(raw, np.uint8)
    if not len(code):
        return 0
    edge = code == _QUOTE
    if (code == _BACKSLASH).any():
        at = np.arange(len(code), dtype=np.int32)
        last_plain = np.maximum.accumulate(np.where(code != _BACKSLASH, at, -1))  # last non-backslash <= i
        edge[1:] &= (at[:-1] - last_plain[:-1]) % 2 == 0  # an even run of backslashes before it (often none)
    outside = np.cumsum(edge, dtype=np.int32) & 1 == 0  # a closing quote counts as outside; brackets aren't quotes
    steps = (code == _OPEN1).view(np.int8) + (code == _OPEN2).view(np.int8)
    steps -= (code == _CLOSE1).view(np.int8) + (code == _CLOSE2).view(np.int8)
    steps[~outside] = 0
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))
