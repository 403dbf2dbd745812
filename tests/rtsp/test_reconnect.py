import asyncio
import random
import time

import pytest

from mediaserver.rtsp.reconnect import Backoff, RateLimiter


def test_backoff_full_jitter_grows_to_cap_and_resets() -> None:
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays[:1]) <= 0.5 and max(delays[-50:]) > 4.0  # ceilings 0.5, 1, 2, ... then 8
    backoff.reset()
    assert backoff.next_delay() <= 0.5


async def test_rate_limiter_caps_attempts_per_second() -> None:
    limiter = RateLimiter(rate=20, burst=5)
    start = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(25)))
    elapsed = time.monotonic() - start
    # 5 at once, then 20 more at 20/s: about one second, never much less.
    assert elapsed >= 0.9
    assert limiter.granted == 25


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
