"""One error vocabulary for RTSP (issue 10 item 3): every failure a session raises names an `ErrorKind`, the values
the `/metrics` label takes; plus what a registry URL configures beyond the camera's URL (allow_basic, tls_sha256)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mediaserver.registry import RegistryError, make_camera
from mediaserver.rtsp.client import RtspClient, Source, Timeouts
from mediaserver.rtsp.errors import ErrorKind, RtspError

ROOT = Path(__file__).resolve().parents[2]
RAISERS = [*sorted((ROOT / "mediaserver" / "rtsp").glob("*.py")), ROOT / "mediaserver" / "ingest.py"]


def kinds_raised(path: Path) -> list[tuple[int, str]]:
    """(line, the kind argument's source) of every RtspError(...) in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "RtspError":
            found.append((node.lineno, ast.unparse(node.args[0]) if node.args else ""))
    return found


@pytest.mark.parametrize("path", RAISERS, ids=lambda p: p.name)
def test_every_rtsp_error_names_an_error_kind(path: Path) -> None:
    for line, kind in kinds_raised(path):
        assert kind.startswith("ErrorKind.") and kind.removeprefix("ErrorKind.") in ErrorKind.__members__, (
            f"{path.name}:{line}: RtspError({kind}, ...): use an ErrorKind member, not a string"
        )


def test_kinds_are_the_metric_label_values() -> None:
    assert all(kind.value == kind.value.lower() and kind.value.isidentifier() for kind in ErrorKind)
    assert f"{ErrorKind.STALLED}" == "stalled" and {"stalled": 1}[ErrorKind.STALLED] == 1  # counters keyed by str


def test_rtsps_is_accepted_by_the_registry_and_the_client() -> None:
    """Both speak it now (tests/test_rtsps.py streams over TLS); a non-RTSP scheme stays refused by both."""
    assert make_camera("c1", "c1", "", 37.5, 127.0, "rtsps://127.0.0.1:322/stream").url.startswith("rtsps://")
    with pytest.raises(RegistryError):
        make_camera("c1", "c1", "", 37.5, 127.0, "http://127.0.0.1/stream")


async def test_a_non_rtsp_url_is_a_bad_url() -> None:
    class Sink:
        cache = None

        def put(self, unit: object) -> None: ...

    client = RtspClient(Source("http://127.0.0.1:322/stream"), Sink(), Timeouts(connect=1))
    with pytest.raises(RtspError) as refused:
        await client.start()
    assert refused.value.kind == ErrorKind.BAD_URL
    await client.close()


def test_allow_basic_is_a_url_flag_that_the_camera_never_sees() -> None:
    source = Source.of_camera("rtsp://cam:554/live?channel=1&allow_basic=1&subtype=0", "u", "p")
    assert source.allow_basic and source.url == "rtsp://cam:554/live?channel=1&subtype=0"
    assert not Source.of_camera("rtsp://cam/live?allow_basic=0", None, None).allow_basic
    plain = Source.of_camera("rtsp://cam/live?channel=1", "u", "p")
    assert not plain.allow_basic and plain.url == "rtsp://cam/live?channel=1"
    pinned = Source.of_camera("rtsps://cam/live?tls_sha256=AB:CD", "u", "p")
    assert pinned.tls_sha256 == "AB:CD" and pinned.url == "rtsps://cam/live" and not pinned.allow_basic
