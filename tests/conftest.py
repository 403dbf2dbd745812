"""Session fixtures: test clips and simulated RTSP cameras (real gst-rtsp-server processes).

Cameras (all 640x360, 25 fps, 127.0.0.1, free ports):
    h264_camera       rtsp URL, H.264 constrained baseline, 1 s GOP, single slice
    h265_camera       rtsp URL, H.265 main, 1 s GOP
    long_gop_camera   rtsp URL, H.264, 4 s GOP (a joining viewer waits for a keyframe)
    sliced_h264_camera rtsp URL, H.264, 1 s GOP, 4 slices per picture (as `-tune zerolatency` cameras)
    auth_camera       factory: auth_camera("basic" | "digest", user, password) -> rtsp URL
                      (credentials not in the URL; see peers.with_credentials)
Clips: clips_dir, h264_clip, h265_clip, long_gop_clip, sliced_h264_clip (paths; made once per session).
Fault injection: h264_capture, h265_capture (real RTP recorded from the cameras) and
    bad_rtsp          async factory: await bad_rtsp("rtp_version_1", codec="h265") -> BadRtspServer
                      (.url, .requests, .connections); modes documented on peers.BadRtspServer.
Set GOLDENTIME_CLIP_CACHE=DIR to keep clips between sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

# Plain `pytest` from a checkout that is not pip-installed: make the project importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.feed import Unit, feed, make_clip, read_units
from helpers.peers import (
    Auth,
    AuthCamera,
    BadRtspServer,
    Capture,
    FaultMode,
    SimCam,
    capture_rtsp_blocking,
    missing_peers,
    simcam,
)

from mediaserver.egress import Egress
from mediaserver.hub import Hub
from mediaserver.simcam.clips import ensure_clip


@pytest.fixture(scope="session")
def peers_available() -> None:
    """Fail early, with the fix, when the external programs are missing."""
    if missing := missing_peers():
        pytest.fail(f"missing test peers: {', '.join(missing)}; see docs/PEERS.md", pytrace=False)


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = os.environ.get("GOLDENTIME_CLIP_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def h264_clip(clips_dir: Path, peers_available: None) -> Path:
    return ensure_clip(clips_dir, "h264", gop=25)


@pytest.fixture(scope="session")
def h265_clip(clips_dir: Path, peers_available: None) -> Path:
    return ensure_clip(clips_dir, "h265", gop=25)


@pytest.fixture(scope="session")
def long_gop_clip(clips_dir: Path, peers_available: None) -> Path:
    return ensure_clip(clips_dir, "h264", gop=100, seconds=12)


@pytest.fixture(scope="session")
def sliced_h264_clip(clips_dir: Path, peers_available: None) -> Path:
    return ensure_clip(clips_dir, "h264", gop=25, slices=4)


@pytest.fixture(scope="session")
def camera_server(h264_clip: Path, h265_clip: Path, long_gop_clip: Path, sliced_h264_clip: Path) -> Iterator[SimCam]:
    """One camera process serving the unauthenticated mounts."""
    mounts = {"h264": h264_clip, "h265": h265_clip, "longgop": long_gop_clip, "sliced": sliced_h264_clip}
    with simcam(mounts) as cam:
        yield cam


@pytest.fixture(scope="session")
def h264_camera(camera_server: SimCam) -> str:
    return camera_server.url("h264")


@pytest.fixture(scope="session")
def h265_camera(camera_server: SimCam) -> str:
    return camera_server.url("h265")


@pytest.fixture(scope="session")
def long_gop_camera(camera_server: SimCam) -> str:
    return camera_server.url("longgop")


@pytest.fixture(scope="session")
def sliced_h264_camera(camera_server: SimCam) -> str:
    return camera_server.url("sliced")


@pytest.fixture(scope="session")
def auth_camera(h264_clip: Path) -> Iterator[AuthCamera]:
    """auth_camera(method, user, password) -> URL of an H.264 mount behind that auth (one process each)."""
    running: dict[tuple[Auth, str, str], str] = {}
    with contextlib.ExitStack() as stack:

        def start(method: Auth, user: str = "admin", password: str = "secret") -> str:
            key = (method, user, password)
            if key not in running:
                cam = stack.enter_context(simcam({"cam": h264_clip}, auth=method, user=user, password=password))
                running[key] = cam.url("cam")
            return running[key]

        yield start


@pytest.fixture(scope="session")
def h264_capture(h264_camera: str) -> Capture:
    """~1-2 GOPs of real RTP recorded from h264_camera, for BadRtspServer."""
    return capture_rtsp_blocking(h264_camera)


@pytest.fixture(scope="session")
def h265_capture(h265_camera: str) -> Capture:
    return capture_rtsp_blocking(h265_camera)


@pytest.fixture
async def bad_rtsp(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[BadRtspServer]]]:
    """await bad_rtsp(mode, codec="h264", good_packets=50, every=10) -> a started BadRtspServer.

    Runs on the test's event loop (async tests); for sync tests use peers.bad_rtsp_in_thread.
    """
    servers: list[BadRtspServer] = []

    async def start(mode: FaultMode = "replay", codec: str = "h264", **options: int) -> BadRtspServer:
        capture = request.getfixturevalue(f"{codec}_capture")
        server = BadRtspServer(capture, mode, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


# --- in-process cameras: a hub fed from a short clip, for tests of egress and the front without RTSP ------------
@pytest.fixture(scope="session")
def clip_units(tmp_path_factory: pytest.TempPathFactory, peers_available: None) -> list[Unit]:
    """2 s of H.264 640x360, 1 s GOP, as access units."""
    return read_units(make_clip(tmp_path_factory.mktemp("clip") / "c.h264", seconds=2, gop=25))


@pytest.fixture
async def live_hub(clip_units: list[Unit]) -> AsyncIterator[Hub]:
    """Camera "cam1", fed in real time from `clip_units` (looping, joined a few frames in)."""
    hub = Hub("cam1")
    task = asyncio.create_task(feed(hub, clip_units, start=5))
    yield hub
    task.cancel()


@pytest.fixture
async def city_egress(live_hub: Hub) -> AsyncIterator[Egress]:
    """An Egress on loopback serving `live_hub` as both "cam1" and "cam2" (the incident tests' two cameras)."""
    egress = Egress({"cam1": live_hub, "cam2": live_hub}.get, ice_hosts=["127.0.0.1"])
    yield egress
    await egress.close_all()


# --- layers: `pytest -m unit` (seconds), `-m e2e` (real peers: cameras, clips, servers), `-m browser` -------------
LAYERS = ("unit", "e2e", "browser")
PEER_FIXTURES = {"peers_available", "bad_rtsp"}  # every clip, camera and capture fixture depends on one of these
PEER_HELPERS = {"helpers.peers", "helpers.feed", "helpers.viewers", "helpers.serve_process", "subprocess"}


def _uses_peers(module: object) -> bool:
    """The module starts peers itself: it imports the helpers that make clips, cameras, viewers or processes."""
    return any(getattr(v, "__module__", getattr(v, "__name__", "")) in PEER_HELPERS for v in vars(module).values())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: no external process, no clip; runs in seconds")
    config.addinivalue_line("markers", "e2e: real peers (gst-rtsp-server cameras, ffmpeg clips, server processes)")
    config.addinivalue_line("markers", "browser: headless Chromium through Playwright")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets one layer: its own marker if it has one, else browser when its module drives Chromium, e2e when
    it uses a peer fixture or its module starts peers itself, else unit."""
    for item in items:
        if any(item.get_closest_marker(layer) for layer in LAYERS):
            continue
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "chromium"):
            item.add_marker(pytest.mark.browser)
        elif PEER_FIXTURES & set(getattr(item, "fixturenames", ())) or (module is not None and _uses_peers(module)):
            item.add_marker(pytest.mark.e2e)
        else:
            item.add_marker(pytest.mark.unit)
