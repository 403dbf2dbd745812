"""Backoff after failed logins, per account and per source address, decided before any password hash runs.

`failures` wrong passwords in a row for one account (`address_failures` from one address, higher because a
control room shares one NAT address) lock it for `lock_s`; each further lockout within `forget_s` doubles
that, up to `max_lock_s`. While a key is locked an attempt is refused (429 + Retry-After) without running
scrypt, so a flood costs a dictionary lookup, not a hash: no cost amplification. A success clears the account's
count (not the address's). The state is in memory: one front process per machine decides every login; a
restart forgets it, which only ever shortens a lockout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LockoutSettings:
    failures: int = 5  # per account
    address_failures: int = 20  # per source address
    lock_s: float = 60.0
    max_lock_s: float = 3600.0
    forget_s: float = 900.0  # a key with no failure for this long starts over
    max_keys: int = 100_000  # bound on the memory an address flood may take


@dataclass(slots=True)
class _State:
    failures: int = 0
    level: int = 0  # lockouts so far
    locked_until: float = 0.0
    last: float = 0.0


class Lockout:
    def __init__(self, settings: LockoutSettings | None = None) -> None:
        self.settings = settings or LockoutSettings()
        self._keys: dict[str, _State] = {}

    def retry_after(self, *keys: str, now: float | None = None) -> float | None:
        """Seconds until the longest lock among `keys` ends, or None when none is locked."""
        now = time.monotonic() if now is None else now
        left = max((s.locked_until - now for k in keys if (s := self._keys.get(k))), default=0.0)
        return left if left > 0 else None

    def failed(self, account: str, address: str, now: float | None = None) -> float | None:
        """Count one failure for the account and the address. Returns the lock's length in seconds when this
        failure started a lockout (the caller audits it, once), else None."""
        now = time.monotonic() if now is None else now
        s = self.settings
        started = [self._fail(account, s.failures, now), self._fail(address, s.address_failures, now)]
        return max((x for x in started if x is not None), default=None)

    def succeeded(self, account: str) -> None:
        self._keys.pop(account, None)

    def _fail(self, key: str, threshold: int, now: float) -> float | None:
        s = self.settings
        state = self._keys.get(key)
        if state is None:
            self._bound(now)
            state = self._keys[key] = _State()
        if now - state.last > s.forget_s and state.locked_until <= now:
            state.failures, state.level = 0, 0
        state.last = now
        state.failures += 1
        if state.failures < threshold:
            return None
        state.failures = 0
        state.level += 1
        length = min(s.lock_s * 2 ** (state.level - 1), s.max_lock_s)
        state.locked_until = now + length
        return length

    def _bound(self, now: float) -> None:
        """Forget idle keys when the table is full; locked keys are kept (an attacker cannot unlock by flooding)."""
        if len(self._keys) < self.settings.max_keys:
            return
        for key, state in list(self._keys.items()):
            if state.locked_until <= now:
                del self._keys[key]
