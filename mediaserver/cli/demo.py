"""`mediaserver demo`: simulated cameras around Seoul City Hall, registered and served with no setup.

The cameras are gst-rtsp-server mounts (mediaserver/simcam) looping test clips; they are real RTSP
servers, so the demo exercises the same ingest path as a city's cameras."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mediaserver.registry import Registry, make_camera
from mediaserver.simcam import GST_CAMERA, SYSTEM_PYTHON
from mediaserver.simcam.clips import ensure_clip

if TYPE_CHECKING:
    from mediaserver.cli.serve import ServerSettings

CITY_HALL = (37.5663, 126.9779)
DISTRICTS = ("Jung-gu", "Jongno-gu", "Yongsan-gu", "Mapo-gu", "Seodaemun-gu", "Seongdong-gu")


def start_cameras(clip_dir: Path, count: int) -> tuple[subprocess.Popen[str], str]:
    """Start one simcam process with `count` mounts; returns it and its rtsp:// base URL."""
    clips = [ensure_clip(clip_dir, "h264", gop=25 * (1 + i % 4), seconds=8) for i in range(count)]
    mounts = [arg for i, clip in enumerate(clips) for arg in ("--mount", f"/cam{i + 1}={clip}")]
    proc = subprocess.Popen([SYSTEM_PYTHON, str(GST_CAMERA), "--port", "0", *mounts], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY "):
            return proc, line.split()[1].rstrip("/")
    raise RuntimeError("simulated cameras did not start (are the GStreamer packages installed?)")


def register(db: str, base_url: str, count: int) -> None:
    registry = Registry(db)
    lat0, lon0 = CITY_HALL
    cameras = [
        make_camera(
            f"demo-{i + 1}",
            f"Demo camera {i + 1}",
            DISTRICTS[i % len(DISTRICTS)],
            round(lat0 + 0.002 * (i // 3), 6),
            round(lon0 + 0.002 * (i % 3), 6),
            f"{base_url}/cam{i + 1}",
        )
        for i in range(count)
    ]
    registry.upsert(cameras)
    registry.close()


def run_demo(settings: ServerSettings, count: int) -> int:
    import uvloop

    from mediaserver.cli.serve import serve_forever

    if not shutil.which("ffmpeg") or not Path(SYSTEM_PYTHON).exists():
        print("demo needs ffmpeg and GStreamer: run scripts/setup.sh first", file=sys.stderr)
        return 2
    proc, base_url = start_cameras(Path.home() / ".cache" / "goldentime" / "clips", count)
    try:
        register(settings.db, base_url, count)
        from signaling.access import demo_console_token

        # Viewing needs a stream token even in the demo: a demo incident around the cameras, its token in
        # the URL fragment (never sent to the server in requests or Referer; the page moves it to storage).
        token = demo_console_token(settings.db, CITY_HALL[1], CITY_HALL[0])
        url = f"http://{settings.host}:{settings.port}/#token={token}"

        def ready() -> None:
            print(
                f"Goldentime demo: {count} simulated cameras. Open the console (token valid 1 h) at {url}", flush=True
            )

        uvloop.run(serve_forever(settings, on_ready=ready))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0
