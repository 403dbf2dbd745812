"""The HTTP edge: what the front believes about a request, and how the policy's refusals become responses.

- `Host` is checked on every request against `EdgeSettings.allowed_hosts` (421 otherwise, 400 when absent): a
  page on attacker.example whose name was rebound to 127.0.0.1 sends `Host: attacker.example`, so DNS
  rebinding cannot read the ops or camera views from a browser on the server's machine or network. An entry
  `name` allows any port, `name:port` (`[v6]:port`) one port. The default is loopback only (`localhost`,
  `127.0.0.1`, `[::1]`); `mediaserver serve` adds its `--http` address, and a public name is added with
  `--allowed-hosts`.
- Behind a reverse proxy, `X-Forwarded-For` and `X-Forwarded-Proto` are believed only from the peers in
  `trusted_proxies` (CIDRs; none by default): the client is the right-most address in `X-Forwarded-For` that is
  not itself a trusted proxy. Everything downstream (audit, quotas, the scrape allow-list) sees that address
  as `request.remote`. The proxy must pass `Host` through unchanged (nginx: `proxy_set_header Host $host`).
- `AccessDenied` (signaling/errors.py), raised by policy code, becomes its JSON response here, in one place:
  `WWW-Authenticate` on a 401, `Retry-After` on a 429.

Middleware order (signaling/app.py): `guard` (host, proxy) outermost, then CORS, then `refusals`, so refusals
carry CORS headers and a CORS preflight with a foreign `Host` is refused too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from signaling.access import Origin
from signaling.errors import AccessDenied

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    allowed_hosts: Sequence[str] = field(default_factory=lambda: list(LOOPBACK_HOSTS))
    trusted_proxies: Sequence[str] = ()  # CIDRs of reverse proxies whose X-Forwarded-* headers are believed


def split_host(value: str) -> tuple[str, int | None]:
    """`name[:port]` or `[v6][:port]` -> (lowercase name without brackets or trailing dot, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""  # a bare IPv6 address (an allow-list entry) or a name
    return name.rstrip("."), int(port) if port.isdigit() else None


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    name, port = split_host(host)
    for entry in allowed:
        want_name, want_port = split_host(entry)
        if name == want_name and (want_port is None or want_port == port):
            return True
    return False


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def forwarded_client(peer: str | None, forwarded_for: str, trusted: Sequence[Network]) -> str | None:
    """The client address behind trusted proxies, or None to keep the peer (untrusted peer, bad header)."""
    peer_ip = _ip(peer or "")
    if peer_ip is None or not any(peer_ip in net for net in trusted):
        return None
    hops = [h for h in (p.strip() for p in forwarded_for.split(",")) if h]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return None  # a garbled hop: believe nothing beyond the proxy that sent it
        if not any(ip in net for net in trusted):
            return str(ip)
    return str(_ip(hops[0])) if hops else None


def guard_middleware(settings: EdgeSettings) -> Middleware:
    trusted = [ipaddress.ip_network(c.strip(), strict=False) for c in settings.trusted_proxies]
    allowed = list(settings.allowed_hosts)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted:
            client = forwarded_client(request.remote, request.headers.get("X-Forwarded-For", ""), trusted)
            if client is not None:
                proto = request.headers.get("X-Forwarded-Proto", "").strip().lower()
                scheme = proto if proto in ("http", "https") else request.scheme
                request = request.clone(remote=client, scheme=scheme)
        host = request.headers.get("Host")
        if not host:
            return refusal(AccessDenied(400, "missing Host header", "HTTP/1.1 requests name the server they want"))
        if not host_allowed(host, allowed):
            return refusal(AccessDenied(421, "misdirected request", "this server does not answer for that Host"))
        return await handler(request)

    return guard


@web.middleware
async def refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AccessDenied as exc:
        return refusal(exc)


def refusal(exc: AccessDenied) -> web.Response:
    """The one mapping from a policy refusal to HTTP."""
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="goldentime", error="invalid_token"'
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(int(exc.retry_after_s))
    return web.json_response(exc.body(), status=exc.status, headers=headers or None)


def caller(request: web.Request) -> Origin:
    """The plain values the policy records about who asked."""
    return Origin(request.remote, request.method, request.path)


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
