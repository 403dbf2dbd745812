"""How long and how much the HTTP front gives one connection (issue 13: slowloris and oversized requests).

aiohttp bounds sizes (request line and each header 8190 bytes, a bounded header count: 400; a body over
`client_max_size`: 413) but, left to its defaults, not time: a connection whose headers never finish is held
for the keep-alive timeout (3,630 s), and a request whose body stops halfway is held for as long as the
client likes. So:

- `idle_s`: a connection with no complete request within this (headers trickling in, or idle between
  requests) is closed. aiohttp's keep-alive timer starts at accept and is only put back by a finished
  response, so it bounds a slow request head as well as an idle keep-alive connection.
- `body_s`: a request whose body has not fully arrived this long after its head is closed; the handler's
  read fails and nothing is answered (the client is gone in all but name).
- `linger_s`: after an early refusal (401, 413) with the body unread, aiohttp reads and drops the rest of it
  at most this long, then the connection closes (not kept alive for a client that sends 10 MB to be refused).
- a malformed request is the client's fault: aiohttp logs each one with a traceback at ERROR; `QuietClientErrors`
  lets one through per `log_every_s` with the count of those dropped, so bad requests cannot fill the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    idle_s: float = 10.0
    body_s: float = 10.0  # a 1 MiB body at 0.8 Mbit/s; an SDP offer or incident JSON is far smaller
    linger_s: float = 2.0
    max_line: int = 8190  # request line and each header line, bytes
    max_headers: int = 100
    log_every_s: float = 10.0

    def runner_options(self) -> dict[str, Any]:
        """Keyword arguments for `web.AppRunner` (they reach every connection's handler)."""
        return {"keepalive_timeout": self.idle_s, "lingering_time": self.linger_s, "max_line_size": self.max_line,
                "max_field_size": self.max_line, "max_headers": self.max_headers,
                "logger": quiet_logger(self.log_every_s)}  # fmt: skip


def body_deadline(limits: HttpLimits) -> Middleware:
    """Middleware: close the connection of a request whose body is still incomplete after `body_s`."""

    @web.middleware
    async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        timer = asyncio.get_running_loop().call_later(limits.body_s, _cut_if_incomplete, request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _close_after_refusal(request, exc)
            raise
        finally:
            timer.cancel()
        _close_after_refusal(request, response)
        return response

    return deadline


def _close_after_refusal(request: web.Request, response: web.StreamResponse) -> None:
    """A refused request's unread body is not read to its end for keep-alive's sake: the connection closes
    after at most `linger_s` (long enough for the client to read the answer before the close)."""
    if response.status >= 400 and not request.content.is_eof():
        response.force_close()


def _cut_if_incomplete(request: web.Request) -> None:
    if not request.content.is_eof() and request.transport is not None:
        request.transport.close()


class QuietClientErrors(logging.Filter):
    """Drops aiohttp's records of malformed requests (`HttpProcessingError`) but one per interval, which says
    how many were dropped since the last; server faults (anything else) always pass."""

    def __init__(self, every_s: float) -> None:
        super().__init__()
        self.every_s = every_s
        self.dropped = 0
        self._last = -float("inf")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | ConnectionResetError):
            return True
        now = time.monotonic()
        if now - self._last < self.every_s:
            self.dropped += 1
            return False
        self._last = now
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} more malformed requests not logged)"
            self.dropped = 0
        record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.INFO, "INFO"
        record.msg = f"{record.msg}: {type(exc).__name__}: " + str(exc).replace("\n", " ").replace("%", "%%")
        return True


def quiet_logger(every_s: float) -> logging.Logger:
    """The front's HTTP logger with a fresh filter: a server that starts counts its own malformed requests (one
    front per process in production; in tests a filter left by an earlier server would swallow the first line)."""
    logger = logging.getLogger("goldentime.http")
    for old in [f for f in logger.filters if isinstance(f, QuietClientErrors)]:
        logger.removeFilter(old)
    logger.addFilter(QuietClientErrors(every_s))
    return logger
