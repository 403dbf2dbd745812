"""One guard around every password check (operators' sign-in, clients' Basic and /oauth/token credentials):
the lockout (signaling/lockout.py) is consulted first, and a locked account or address is refused with 429 +
Retry-After before any scrypt runs. Audit: the failure that starts a lockout is one `access.denied` record
(status 429, the lock's length); the refusals while it lasts are only counted, into the source's
`access.suppressed` summary (signaling/refusals.py), so a flood writes one record per lockout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from signaling.access import Access, Caller
from signaling.errors import QuotaExceeded

T = TypeVar("T")
LOCKED = "too many failed logins"


async def guarded(
    access: Access, request: Caller, account: str, check: Callable[[], Awaitable[T | None]], **audit: Any
) -> T | None:
    """`check()`'s answer (None: wrong credentials, counted) unless `account` or the caller's address is
    locked out (QuotaExceeded, 429). `account` is namespaced by the caller ("operator:kim", "client:gt-...")."""
    lock = access.lockout
    address = f"address:{request.remote}"
    left = lock.retry_after(account, address)
    if left is not None:
        access.refusals.count(request.remote, 429, LOCKED)
        raise QuotaExceeded(LOCKED, "try again later", left)
    found = await check()
    if found is not None:
        lock.succeeded(account)
        return found
    length = lock.failed(account, address)
    if length is not None:
        exc = QuotaExceeded(LOCKED, f"locked for {int(length)} s after repeated failures", length)
        raise access.over_quota(request, exc, **audit)  # the one record of this lockout
    return None
