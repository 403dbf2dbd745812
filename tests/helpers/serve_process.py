"""`mediaserver serve --workers N` as a real process for tests, and waiting until it is ready."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from helpers.peers import _die_with_parent, free_port, stop_process


@contextlib.contextmanager
def serve(db: str, log_path: Path, workers: int = 2) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(base URL, process); the log's tail is printed when it stops (pytest shows it for failures)."""
    port = free_port()
    argv = [sys.executable, "-m", "mediaserver.cli", "serve", "--db", db, "--http", f"127.0.0.1:{port}",
            "--workers", str(workers), "--ice-host", "127.0.0.1"]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop_process(proc)
        print(log_path.read_text()[-4000:])


async def wait_ready(session: aiohttp.ClientSession, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until /readyz answers 200: the registry is loaded and every worker is up."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "server exited"
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get("/readyz") as res:
                if res.status == 200:
                    return
        assert time.monotonic() < deadline, f"server not ready within {timeout:g} s"
        await asyncio.sleep(0.1)
