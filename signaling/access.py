"""The access layer, composed: clients, keys, tokens, incidents, scope, audit and live views over one SQLite
file, plus the decisions the HTTP handlers ask for (may this request view this camera now?) and the sweep
that takes access back when it runs out.

Every refusal is audited, then raised as a domain error (`signaling.errors.AccessDenied`: 401, 403, or a
`QuotaExceeded` 429 from signaling/quotas.py) that the HTTP edge (signaling/edge.py) maps to a response. Policy
code takes plain values: a token, a `Caller` (remote address, method, path: what the audit records), camera ids.

Who sees which cameras (the camera list, a camera's status): a stream token, the cameras its incident opens
now; an agency client, the cameras in the scope of its agency's open incidents (owned or shared); an admin
(the city's video administrators, role `admin`), every camera; an auditor, none (auditors read the audit log,
which names cameras, and nothing else). Outside what a caller may see, every id answers 403, registered or
not, so a token cannot tell which camera ids exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from signaling.audit import AnchorPolicy, AuditLog
from signaling.clients import SCRYPT_N, Client, Clients
from signaling.db import connect
from signaling.errors import AccessDenied, Denied, QuotaExceeded
from signaling.incidents import MAX_WINDOW_S, Incident, Incidents, Spec, audit_changes
from signaling.keys import PUBLISH_AHEAD_S, KeyStore
from signaling.lockout import Lockout, LockoutSettings
from signaling.operators import SIGNED_IN, Operator, Operators, OperatorSettings
from signaling.quotas import Quotas, QuotaSettings, Slot
from signaling.refusals import RefusalLimiter, RefusalLimits, cap
from signaling.scope import Hit, ScopeIndex, camera_points
from signaling.tokens import TokenError, Tokens, TokenSettings
from signaling.views import CloseSession, View, ViewRegistry

log = logging.getLogger(__name__)

STREAM_SCOPE = "whep:view"
API_SCOPE = "incidents"


@dataclass(frozen=True, slots=True)
class AccessSettings:
    tokens: TokenSettings = field(default_factory=TokenSettings)
    publish_ahead_s: float = PUBLISH_AHEAD_S
    urn_domain: str = "goldentime.seoul"
    sweep_s: float = 0.25  # how often expiry/revocation/scope is re-checked for every live view
    camera_refresh_s: float = 10.0  # how often the camera list is compared with the scope index
    scrypt_n: int = SCRYPT_N
    incident_window_s: float = MAX_WINDOW_S  # the longest an incident may last from its creation
    refusals: RefusalLimits = field(default_factory=RefusalLimits)  # per-source bound on refusal records
    quotas: QuotaSettings = field(default_factory=QuotaSettings)  # per-token/per-client caps and rates
    anchors: AnchorPolicy = field(default_factory=AnchorPolicy)  # how often the audit chain is checkpointed
    operators: OperatorSettings = field(default_factory=OperatorSettings)  # console sessions (signaling/operators.py)
    lockout: LockoutSettings = field(default_factory=LockoutSettings)  # backoff after failed logins


__all__ = ["ACCESS", "Access", "AccessDenied", "AccessSettings", "Caller", "Denied", "Grant", "Origin"]


class Caller(Protocol):
    """Who asks, as the audit records it (an aiohttp request has these attributes too)."""

    @property
    def remote(self) -> str | None: ...
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Origin:
    """A `Caller` from plain values (the HTTP edge builds one per request; the CLI has no path)."""

    remote: str | None
    method: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Grant:
    """A verified stream token and the incident it is for."""

    claims: dict[str, Any]
    incident: Incident

    @property
    def agency(self) -> str:
        return str(self.claims["incident"]["agency"])


class Access:
    def __init__(
        self,
        db_path: str | Path,
        close_session: CloseSession,
        cameras: Callable[[], Iterable[Any]],
        settings: AccessSettings | None = None,
    ) -> None:
        self.settings = s = settings or AccessSettings()
        self.db = connect(db_path)
        self.clients = Clients(self.db, s.scrypt_n)
        self.operators = Operators(self.db, s.operators)
        self.lockout = Lockout(s.lockout)  # operators' sign-ins and clients' credentials (signaling/lockout.py)
        retain = s.tokens.max_ttl_s + s.tokens.leeway_s + 60  # retired keys outlive every token they signed
        self.keys = KeyStore(self.db, s.publish_ahead_s, retain)
        self.tokens = Tokens(self.db, self.keys, s.tokens, self.active)  # a disabled client's tokens fail
        self._cameras = cameras
        self.scope = ScopeIndex(camera_points(cameras()))
        self.incidents = Incidents(self.db, self.scope, s.urn_domain, s.incident_window_s)
        self.incidents.open_incidents()  # warm the cache: the sweep watches these
        self.audit: AuditLog = AuditLog(self.db, policy=s.anchors)
        self.refusals = RefusalLimiter(s.refusals)
        self.views = ViewRegistry(close_session, self._view_ended)
        self.quotas = Quotas(s.quotas, self.views.counts)
        self._sweeper: asyncio.Task[None] | None = None
        self._sessions: Callable[[], set[str]] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, live_sessions: Callable[[], set[str]] | None = None) -> None:
        """Start the sweep (needs a running loop). `live_sessions()` lists the worker's sessions, so views
        whose viewer simply left are audited as ended too."""
        self._sessions = live_sessions
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.views.end_where(lambda v: True, "server shutdown")
        self.flush_refusals()
        self.audit.anchor("shutdown")  # a clean stop leaves nothing unanchored

    def close(self) -> None:
        self.audit.anchor()  # the CLI's records (no sweep there); nothing new after stop()
        self.db.close()

    def flush_refusals(self) -> int:
        """Write the owed `access.suppressed` summaries now. Returns how many."""
        summaries = self.refusals.flush()
        for fields in summaries:
            self.audit.append("access.suppressed", **fields)
        return len(summaries)

    async def _sweep_forever(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            try:
                if time.monotonic() - last_refresh > self.settings.camera_refresh_s:
                    last_refresh = time.monotonic()
                    if self.refresh_cameras():
                        await self.incidents.rescope()  # every open incident's new scope, off the loop
                await self.sweep()
                if self.refusals.due():
                    self.flush_refusals()
                if self.audit.anchor_due():
                    await self.audit.anchor_async()
            except Exception:
                log.exception("access sweep failed")

    def active(self, client_id: str) -> bool:
        """An enabled agency client, or an enabled operator account (ids `op-...`, signaling/operators.py)."""
        return self.operators.active(client_id) if client_id.startswith("op-") else self.clients.active(client_id)

    def refresh_cameras(self) -> bool:
        return self.scope.update(camera_points(self._cameras()))

    async def sweep(self, now: float | None = None) -> int:
        """Close incidents whose window ended; end every view whose access is gone. Returns views ended."""
        now = time.time() if now is None else now
        ended = 0
        for incident in self.incidents.due_to_expire(now):
            ended += await self.close_incident(incident, None, "window ended")
        live = self._sessions() if self._sessions is not None else None
        for view in self.views.all():
            if live is not None and view.session_id not in live:
                await self.views.end(view.session_id, "viewer left", close=False)
                ended += 1
                continue
            reason = self._lapsed(view, now)
            if reason:
                await self.views.end(view.session_id, reason)
                ended += 1
        return ended

    def _lapsed(self, view: View, now: float) -> str | None:
        """Why a live view may no longer go on, or None."""
        if view.exp <= now:
            return "token expired"
        if self.tokens.is_revoked(view.jti):
            return "token revoked"
        if not self.active(view.client_id):
            return "client disabled"
        incident = self.incidents.get(view.incident)
        if incident is None or not incident.is_open(now):
            return "incident closed"
        if view.agency not in incident.agencies:
            return "incident no longer shared with the agency"
        if not self.incidents.in_scope(incident, view.camera):
            return "camera left the incident's scope"
        return None

    # -- operations (API and CLI) ----------------------------------------------------------------------

    def add_client(
        self, agency: str, name: str, role: str = "agency", operator: str | None = None
    ) -> tuple[Client, str]:
        client, secret = self.clients.add(agency, name, role)
        self.audit.append(
            "client.added", operator=operator, agency=agency, client_id=client.client_id, detail={"role": role}
        )
        return client, secret

    def add_operator(
        self, agency: str, username: str, role: str, password: str | None = None, operator: str | None = None
    ) -> tuple[Operator, str]:
        """A console account (signaling/operators.py); returns it and its password (one-time when generated)."""
        added, password = self.operators.add(agency, username, role, password)
        self.audit.append("operator.added", operator=operator, agency=agency, client_id=added.operator_id,
                          detail={"username": username, "role": role})  # fmt: skip
        return added, password

    async def set_operator_disabled(self, username: str, disabled: bool, operator: str | None = None) -> bool:
        """Disable (sessions end, tokens refused, live views ended) or enable an account; False if unknown."""
        found = self.operators.set_disabled(username, disabled)
        if found is None:
            return False
        event = "operator.disabled" if disabled else "operator.enabled"
        self.audit.append(event, operator=operator, agency=found.agency, client_id=found.operator_id,
                          detail={"username": username})  # fmt: skip
        if disabled:
            await self.views.end_where(lambda v: v.client_id == found.operator_id, "operator disabled")
        return True

    async def set_client_disabled(self, client_id: str, disabled: bool, operator: str | None = None) -> int | None:
        """Disable (its tokens refused, its live views ended here now, elsewhere by their sweep) or enable a
        client. Returns the views ended, None if there is no such client."""
        if not self.clients.set_disabled(client_id, disabled):
            return None
        info = self.clients.describe(client_id) or {}
        event = "client.disabled" if disabled else "client.enabled"
        self.audit.append(event, operator=operator, agency=info.get("agency"), client_id=client_id)
        if not disabled:
            return 0
        return await self.views.end_where(lambda v: v.client_id == client_id, "client disabled")

    async def rotate_client_secret(
        self, client_id: str, revoke_tokens: bool = False, operator: str | None = None
    ) -> tuple[str, int] | None:
        """A new secret (the old one fails at once); `revoke_tokens` also revokes the client's tokens and ends
        their views. Returns (secret, tokens revoked), None if there is no such client."""
        secret = self.clients.rotate(client_id)
        if secret is None:
            return None
        revoked = self.tokens.revoke_client(client_id) if revoke_tokens else []
        info = self.clients.describe(client_id) or {}
        self.audit.append("client.rotated", operator=operator, agency=info.get("agency"), client_id=client_id,
                          detail={"tokens_revoked": len(revoked)})  # fmt: skip
        if revoked:
            doomed = set(revoked)
            await self.views.end_where(lambda v: v.jti in doomed, "token revoked")
        return secret, len(revoked)

    def rotate_key(self, publish_ahead_s: float | None = None, operator: str | None = None) -> dict[str, Any]:
        key = self.keys.rotate(publish_ahead_s)
        detail = {"kid": key.kid, "state": key.state, "activate_at": key.activate_at}
        self.audit.append("key.rotated", operator=operator, detail=detail)
        return detail

    def create_incident(self, spec: Spec, client: Client, operator: str | None, remote: str | None) -> Incident:
        self._rate_limited(self.quotas.take_incident, client, operator, remote)
        incident = self.incidents.create(spec, client.agency, client.client_id)
        self.audit.append(
            "incident.created", **self._who(client, operator, remote), incident=incident.id, basis=incident.basis,
            detail={"service": incident.service, "shared_with": list(incident.shared_with),
                    "geometry": incident.geometry["type"], "cameras": len(self.incidents.cameras(incident))},
        )  # fmt: skip
        return incident

    def update_incident(
        self, incident: Incident, changes: dict[str, Any], client: Client, operator: str | None, remote: str | None
    ) -> Incident:
        fields = sorted(changes)
        updated = self.incidents.update(incident, changes)
        detail: dict[str, Any] = {"fields": fields, "changes": audit_changes(incident, updated, fields)}
        if "geometry" in fields:
            detail["cameras"] = len(self.incidents.cameras(updated))
        self.audit.append(
            "incident.updated", **self._who(client, operator, remote), incident=incident.id, basis=incident.basis,
            detail=detail,
        )  # fmt: skip
        return updated

    async def close_incident(
        self, incident: Incident, client: Client | None, reason: str, operator: str | None = None,
        remote: str | None = None,
    ) -> int:  # fmt: skip
        """Close it and end every live view under it (concurrently). Returns the number of views ended."""
        closed = self.incidents.close(incident, reason)
        who = self._who(client, operator, remote) if client else {"agency": incident.owner}
        self.audit.append("incident.closed", **who, incident=closed.id, basis=closed.basis, reason=reason)
        return await self.views.end_where(lambda v: v.incident == closed.id, f"incident {reason}")

    def issue_stream_token(
        self, incident: Incident, client: Client, operator: str, ttl_s: int | None, remote: str | None,
        single_use: bool = False,
    ) -> tuple[str, dict[str, Any], list[Hit]]:  # fmt: skip
        self._rate_limited(self.quotas.take_mint, client, operator, remote)
        context = {
            "id": incident.id,
            "service": incident.service,
            "agency": client.agency,
            "owner": incident.owner,
            "basis": incident.basis,
        }
        ttl = min(ttl_s or self.settings.tokens.stream_ttl_s, int(incident.until - time.time()) + 1)
        token, claims = self.tokens.issue(
            self.settings.tokens.stream_audience, operator, client.client_id, client.agency, ttl,
            {"scope": STREAM_SCOPE, "incident": context}, incident_id=incident.id, single_use=single_use,
        )  # fmt: skip
        cameras = self.incidents.cameras(incident)
        self.audit.append(
            "token.issued", **self._who(client, operator, remote), incident=incident.id, basis=incident.basis,
            jti=claims["jti"], detail={"exp": claims["exp"], "cameras": len(cameras), "single_use": single_use},
        )  # fmt: skip
        return token, claims, cameras

    def issue_api_token(self, client: Client, remote: str | None) -> tuple[str, dict[str, Any]]:
        self._rate_limited(self.quotas.take_mint, client, None, remote)
        s = self.settings.tokens
        token, claims = self.tokens.issue(
            s.api_audience, client.client_id, client.client_id, client.agency, s.api_ttl_s,
            {"scope": API_SCOPE, "agency": client.agency},
        )  # fmt: skip
        self.audit.append(
            "token.issued", **self._who(client, None, remote), jti=claims["jti"], detail={"audience": s.api_audience}
        )
        return token, claims

    async def revoke_token(self, jti: str, client: Client, remote: str | None, operator: str | None = None) -> int:
        """Revoke and end the token's live views now. Returns the number of views ended."""
        record = self.tokens.get(jti)
        self.tokens.revoke(jti)
        self.audit.append(
            "token.revoked", **self._who(client, operator, remote), jti=jti,
            incident=record.incident_id if record else None,
        )  # fmt: skip
        return await self.views.end_where(lambda v: v.jti == jti, "token revoked")

    def _rate_limited(
        self, take: Callable[[str], None], client: Client, operator: str | None, remote: str | None
    ) -> None:
        """Take one from the client's bucket, or audit the refusal and raise QuotaExceeded (429)."""
        try:
            take(client.client_id)
        except QuotaExceeded as exc:
            raise self.over_quota(
                Origin(remote), exc, operator=operator, agency=client.agency, client_id=client.client_id
            ) from None

    @staticmethod
    def _who(client: Client | None, operator: str | None, remote: str | None) -> dict[str, Any]:
        if client is None:
            return {"operator": operator, "remote": remote}
        return {"operator": operator, "agency": client.agency, "client_id": client.client_id, "remote": remote}

    # -- decisions -------------------------------------------------------------------------------------

    def deny(
        self, request: Caller, status: HTTPStatus | int, error: str, detail: str = "", **audit: Any
    ) -> AccessDenied:
        """Audit a refusal (text fields capped; over the source's rate, counted for its summary instead:
        signaling/refusals.py) and return the exception to raise."""
        if audit.get("operator") is None:
            audit["operator"] = SIGNED_IN.get()  # a console session's refusals name its operator
        if self.refusals.admit(request.remote, status, cap(error, 64)):
            self.audit.append(
                "access.denied", reason=cap(f"{error}: {detail}" if detail else error), remote=cap(request.remote),
                detail={"method": cap(request.method, 16), "path": cap(request.path), "status": status},
                **{k: cap(v) for k, v in audit.items()},
            )  # fmt: skip
        return AccessDenied(status, error, detail)

    def over_quota(self, request: Caller, exc: QuotaExceeded, **audit: Any) -> QuotaExceeded:
        """Audit a quota refusal like any other and return it to raise (429 + Retry-After)."""
        self.deny(request, exc.kind, exc.error, exc.detail, **audit)
        return exc

    def verify_stream(self, token: str | None, request: Caller, camera_id: str | None) -> Grant:
        """A stream token (None: none was sent), verified: signature, claims, revocation, incident open and
        shared."""
        if token is None:
            hint = "send Authorization: Bearer <token>"
            raise self.deny(request, 401, "missing bearer token", hint, camera=camera_id)
        try:
            claims = self.tokens.verify(token, self.settings.tokens.stream_audience)
        except TokenError as exc:
            raise self.deny(request, exc.status, "invalid token", exc.reason, camera=camera_id) from None
        context = claims.get("incident")
        who: dict[str, Any] = {
            "operator": claims.get("sub"),
            "client_id": claims.get("client_id"),
            "jti": claims.get("jti"),
        }
        if claims.get("scope") != STREAM_SCOPE or not isinstance(context, dict):
            raise self.deny(request, 403, "not a stream token", "this token does not open cameras", camera=camera_id,
                            **who)  # fmt: skip
        who |= {"agency": context.get("agency"), "incident": context.get("id"), "basis": context.get("basis")}
        incident = self.incidents.get(str(context.get("id")))
        if incident is None:
            raise self.deny(request, 403, "unknown incident", camera=camera_id, **who)
        if not incident.is_open():
            raise self.deny(request, 403, "incident closed", incident.closed_reason or "window ended", camera=camera_id,
                            **who)  # fmt: skip
        if context.get("agency") not in incident.agencies:
            raise self.deny(request, 403, "incident not shared with the agency", camera=camera_id, **who)
        opens_picture = request.method == "POST" or request.path.endswith("/snapshot")
        if claims.get("single_use") is True and opens_picture and not self.tokens.consume(str(claims["jti"])):
            raise self.deny(request, 403, "single-use token already used", "ask for a new token", camera=camera_id,
                            **who)  # fmt: skip
        return Grant(claims, incident)

    def check_scope(self, request: Caller, grant: Grant, camera_id: str) -> None:
        if not self.incidents.in_scope(grant.incident, camera_id):
            raise self.deny(
                request, 403, "camera not in the incident's scope", f"{camera_id} is not near the incident now",
                **self._grant_who(grant), camera=camera_id,
            )  # fmt: skip

    def check_session(self, request: Caller, grant: Grant, camera_id: str, session_id: str) -> None:
        """PATCH/DELETE: a session may only be touched with the token that opened it."""
        view = self.views.get(session_id)
        if view is not None and (view.jti != grant.claims["jti"] or view.camera != camera_id):
            raise self.deny(
                request, 403, "session belongs to another token", session_id, **self._grant_who(grant), camera=camera_id
            )

    def reserve_view(self, request: Caller, grant: Grant, camera_id: str) -> Slot:
        """A slot under the token's and the client's session caps for one offer (hold it until the view has
        started), or 429 (audited)."""
        try:
            return self.quotas.reserve_session(str(grant.claims["jti"]), str(grant.claims["client_id"]))
        except QuotaExceeded as exc:
            raise self.over_quota(request, exc, **self._grant_who(grant), camera=camera_id) from None

    # -- which cameras a client may know about (the camera list and status) --------------------------------

    def visible_cameras(self, client: Client) -> dict[str, list[str]] | None:
        """Camera id -> the open incidents that show it to `client`'s agency; None: every camera (admins)."""
        if client.is_admin:
            return None
        shown: dict[str, list[str]] = {}
        if client.is_auditor:
            return shown
        for incident in self._open_for(client):
            for camera_id, _ in self.incidents.cameras(incident):
                shown.setdefault(camera_id, []).append(incident.id)
        return shown

    def _open_for(self, client: Client) -> list[Incident]:
        return [i for i in self.incidents.open_incidents() if client.agency in i.agencies and i.is_open()]

    def check_camera_list(self, request: Caller, client: Client) -> None:
        if client.is_auditor:
            raise self.deny(request, 403, "auditors read the audit log only", client_id=client.client_id,
                            agency=client.agency)  # fmt: skip

    def check_camera(self, request: Caller, client: Client, camera_id: str) -> None:
        """403 (audited) unless the client may see this camera: the same answer for unknown ids."""
        self.check_camera_list(request, client)
        if client.is_admin:
            return
        if any(self.incidents.in_scope(incident, camera_id) for incident in self._open_for(client)):
            return
        raise self.deny(request, 403, "camera not in your incidents' scope", camera_id, client_id=client.client_id,
                        agency=client.agency, camera=camera_id)  # fmt: skip

    def check_admin(self, request: Caller, client: Client) -> None:
        """State-changing operations (resizing workers): the city's video administrators only."""
        if not client.is_admin:
            raise self.deny(request, 403, "admins only", "needs a client with role admin", client_id=client.client_id,
                            agency=client.agency)  # fmt: skip

    def view_started(self, request: Caller, grant: Grant, camera_id: str, session_id: str) -> None:
        c, incident = grant.claims, grant.incident
        view = View(session_id, camera_id, c["jti"], incident.id, c["sub"], grant.agency, c["client_id"],
                    incident.basis, float(c["exp"]), request.remote)  # fmt: skip
        self.views.add(view)
        self.audit.append("view.started", **self._grant_who(grant), camera=camera_id, session=session_id,
                          remote=request.remote)  # fmt: skip

    def snapshot_viewed(self, request: Caller, grant: Grant, camera_id: str, width: int | None) -> None:
        """A still picture is a view too (privacy law: who saw which camera, when, for what purpose)."""
        self.audit.append("view.snapshot", **self._grant_who(grant), camera=camera_id, remote=request.remote,
                          detail={"width": width})  # fmt: skip

    async def view_ended(self, session_id: str, reason: str) -> None:
        """The viewer ended its session (WHEP DELETE): already closed on the worker."""
        await self.views.end(session_id, reason, close=False)

    def _view_ended(self, view: View, reason: str) -> None:
        self.audit.append(
            "view.ended", operator=view.operator, agency=view.agency, client_id=view.client_id, camera=view.camera,
            incident=view.incident, basis=view.basis, jti=view.jti, session=view.session_id, remote=view.remote,
            reason=reason, duration_s=view.duration_s,
        )  # fmt: skip

    @staticmethod
    def _grant_who(grant: Grant) -> dict[str, Any]:
        c = grant.claims
        return {"operator": c["sub"], "agency": grant.agency, "client_id": c["client_id"], "jti": c["jti"],
                "incident": grant.incident.id, "basis": grant.incident.basis}  # fmt: skip


ACCESS: web.AppKey[Access] = web.AppKey("access", Access)


async def _no_sessions(session_id: str) -> None:
    """The CLI has no worker: there are no live sessions to close."""


def offline(db_path: str | Path) -> Access:
    """The access layer without a worker, for admin commands (clients, keys, audit) beside a running server."""
    return Access(db_path, _no_sessions, list)


def demo_console_token(db_path: str | Path, lon: float, lat: float, radius_m: float = 1500) -> str:
    """For `mediaserver demo` only: a demo client, a standing demo incident around (lon, lat) and an
    hour-long stream token for the console URL's fragment. Secure by default still holds: the demo gets
    access the same way an agency does, and it is all in the audit log."""
    from signaling.incidents import parse_create, rfc3339

    access = offline(db_path)
    try:
        client, _ = access.add_client("demo-console", "mediaserver demo", operator="demo")
        body = {"service": "112-video", "basis": "demo: simulated cameras, no personal data",
                "until": rfc3339(time.time() + 12 * 3600), "radius_m": radius_m, "nearest": 100,
                "geometry": {"type": "Point", "coordinates": [lon, lat]}}  # fmt: skip
        incident = access.create_incident(parse_create(body), client, "demo", None)
        token, _, _ = access.issue_stream_token(incident, client, "demo viewer", 3600, None)
        return token
    finally:
        access.close()
