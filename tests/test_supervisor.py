"""Worker processes run the installed code: a source checkout (or any `mediaserver/` folder) in the working
directory never shadows it (`python -P`), so `pip install .` then `mediaserver serve` from the tree works."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mediaserver.cluster.supervisor import Supervisor
from mediaserver.registry import Registry
from mediaserver.worker import WorkerSettings

pytestmark = pytest.mark.e2e  # starts a worker process


async def test_the_working_directory_never_shadows_the_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "mediaserver").mkdir(parents=True)
    # What an unbuilt checkout looks like to a worker that imports it: no compiled core_ext, so it dies.
    (checkout / "mediaserver" / "__init__.py").write_text("raise ImportError('the working directory shadowed')\n")
    db = str(tmp_path / "gt.db")
    Registry(db).close()
    monkeypatch.chdir(checkout)
    supervisor = Supervisor(1, db, WorkerSettings(ice_hosts=["127.0.0.1"]))
    try:
        await asyncio.wait_for(supervisor.start(), 20)
        assert supervisor.up() == 1 and supervisor.workers[0].restarts == 0
    finally:
        await asyncio.wait_for(supervisor.stop(), 20)
