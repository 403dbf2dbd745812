"""The session errors: one family for egress, the worker RPC and the front, and one kind-to-class table.

Egress raises them; an in-process worker's errors reach the front as they are; a worker process sends
`to_wire(exc)` (`{"error": kind, "detail": text, ...}`) and the front raises `from_wire(body)`, the same class
again. Each class carries its HTTP status (`status`, a number: no web framework here), which signaling/whep.py
and signaling/snapshot_api.py answer with; `title` is the `error` of that JSON answer.

Anything else that escapes a session call is a bug: it is logged with its stack where it is caught (the worker
RPC, the WHEP handler) and answered 500 (`ServerError` between a worker process and the front).
"""

from __future__ import annotations

from typing import Any, ClassVar


class SessionError(Exception):
    kind: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "server error"
    retry_after_s: int | None = None  # set: a 503's Retry-After

    def extra(self) -> dict[str, Any]:
        """Fields beyond `error` and `detail` that travel with it."""
        return {}


class ServerError(SessionError):
    """A worker process failed answering (a bug: its log has the stack)."""


class UnknownCamera(SessionError, LookupError):
    kind, status, title = "unknown_camera", 404, "unknown camera"


class UnknownSession(SessionError, LookupError):
    kind, status, title = "unknown_session", 404, "unknown session"


class BadOffer(SessionError, ValueError):
    """The offer or trickle fragment can't be used: unparsable, no video, no H.264 we can send, too many
    candidates, an unknown profile."""

    kind, status, title = "bad_offer", 400, "bad offer"


class Unsupported(SessionError):
    """A valid request this server does not implement (e.g. ICE restart)."""

    kind, status, title = "unsupported", 422, "not supported"


class WorkerUnavailable(Unsupported):
    """The worker holding the camera is down (restarting): the request may succeed in a few seconds."""

    kind, status, title = "worker_unavailable", 503, "cannot serve"
    retry_after_s = 2


class NotYet(SessionError):
    """The camera has nothing to show yet (no keyframe cached): retry in a moment."""

    kind, status, title = "not_yet", 503, "no picture yet"
    retry_after_s = 1


class Overloaded(SessionError):
    """Admission control refuses new sessions now: retry after `retry_after_s`; `load` says what was measured."""

    kind, status, title = "overloaded", 503, "overloaded"

    def __init__(self, reason: str, retry_after_s: int = 5, load: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.load = load or {}

    def extra(self) -> dict[str, Any]:
        return {"retry_after_s": self.retry_after_s, "load": self.load}


FAMILY = (ServerError, UnknownCamera, UnknownSession, BadOffer, Unsupported, WorkerUnavailable, NotYet, Overloaded)
KINDS: dict[str, type[SessionError]] = {cls.kind: cls for cls in FAMILY}  # the one kind-to-class table


def to_wire(exc: SessionError) -> dict[str, Any]:
    return {"error": exc.kind, "detail": str(exc), **exc.extra()}


def from_wire(body: dict[str, Any]) -> SessionError:
    """The error a worker sent (an unknown kind: a ServerError, as the worker is newer or broken)."""
    kind, detail = str(body.get("error", "")), str(body.get("detail", ""))
    cls = KINDS.get(kind, ServerError)
    if cls is Overloaded:
        return Overloaded(detail, int(body.get("retry_after_s", 5)), body.get("load") or {})
    return cls(detail if kind in KINDS else f"{kind or 'error'}: {detail}")


def http_answer(exc: SessionError, title: str | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, headers) of the HTTP answer to a session error: its class's status, `{"error": title,
    "detail": ...}` plus its extra fields, and Retry-After for a 503 that has one."""
    body = {"error": title or exc.title, "detail": str(exc), **exc.extra()}
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else {}
    return exc.status, body, headers
