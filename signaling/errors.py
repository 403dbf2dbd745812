"""The refusals the access layer decides, as plain exceptions: no HTTP framework here.

Policy code (access.py, quotas.py) raises `AccessDenied` with a status kind from the standard library's
`HTTPStatus` (a vocabulary shared by every layer, not a response); the HTTP edge (signaling/edge.py) turns it
into the JSON response in one place, adding `WWW-Authenticate` to a 401 and `Retry-After` to a 429.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any


class AccessDenied(Exception):
    """A refusal: {"error": ..., "detail": ..., "field"?: ...} with `kind` (401, 403, 404, 409, 421, 429...)."""

    def __init__(
        self, kind: HTTPStatus | int, error: str, detail: str = "", field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(f"{error}: {detail}" if detail else error)
        self.kind = HTTPStatus(kind)
        self.error = error
        self.detail = detail
        self.field = field
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return int(self.kind)

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"error": self.error, "detail": self.detail}
        if self.field:
            doc["field"] = self.field
        if self.retry_after_s is not None:
            doc["retry_after_s"] = self.retry_after_s
        return doc


class QuotaExceeded(AccessDenied):
    """429: a per-token or per-client cap, or a rate limit; `retry_after_s` says when to try again."""

    def __init__(self, error: str, detail: str, retry_after_s: float) -> None:
        super().__init__(HTTPStatus.TOO_MANY_REQUESTS, error, detail, retry_after_s=max(1, math.ceil(retry_after_s)))


Denied = AccessDenied  # the name the HTTP modules used when refusals were aiohttp exceptions
