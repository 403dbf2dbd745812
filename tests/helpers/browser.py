"""Headless Debian Chromium through Playwright, set up as docs/PEERS.md says (no downloads, fresh profile)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator

from playwright.async_api import BrowserContext, async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--no-default-browser-check", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    # mDNS host candidates delayed the first frame by ~1.3 s here.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]  # fmt: skip


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[BrowserContext]:
    """A browser context on a fresh user-data-dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=FLAGS
            )
            try:
                yield context
            finally:
                await context.close()
