"""Floods and slow peers, CI-sized (issue 13 item 3; the long runs are benchmarks/floods.py, which shares these
attacks). The HTTP front's limits against the front in this process with short limits; the rest against
`mediaserver serve --workers 2` with a decoding viewer that must keep playing through each attack."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from lib import floods_attacks as attacks
from lib.floods_target import Target, target

from mediaserver.cli.serve import ServerSettings, start, stop
from signaling.http_limits import HttpLimits

pytestmark = pytest.mark.e2e  # starts a real server and floods it

SHORT = HttpLimits(idle_s=1.0, body_s=1.0, linger_s=0.5)


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[int]:
    """The HTTP front (no cameras, one in-process worker) with short limits; its port."""
    served = await start(ServerSettings(db=str(tmp_path / "gt.db"), port=0, workers=0, http=SHORT))
    try:
        yield served.port
    finally:
        await stop(served)


async def healthz_ms(port: int) -> float:
    t0 = time.monotonic()
    async with asyncio.timeout(2), aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as res:
        assert res.status == 200
    return 1000 * (time.monotonic() - t0)


def test_default_limits_are_bounded() -> None:
    limits = ServerSettings().http
    assert limits.idle_s <= 15 and limits.body_s <= 15 and limits.linger_s <= 5
    options = limits.runner_options()
    assert options["keepalive_timeout"] == limits.idle_s and options["max_field_size"] <= 8190


async def test_slowloris_connections_are_closed_and_others_served(front: int) -> None:
    """Headers one byte every 0.2 s on 50 connections: each is closed by the idle limit (aiohttp's default
    held them for an hour), and /healthz answers meanwhile."""
    target_ = Target(f"http://127.0.0.1:{front}", None, "", "", [], None, "")  # type: ignore[arg-type]
    attack = asyncio.create_task(attacks.slowloris(target_, 4.0, connections=50, every=0.2))
    await asyncio.sleep(0.5)
    latencies = [await healthz_ms(front) for _ in range(5)]
    result = await asyncio.wait_for(attack, 10)
    assert result["closed_by_server"] == 50 and result["last_close_s"] < SHORT.idle_s + 1.5, result
    assert max(latencies) < 500, latencies


async def test_oversized_requests_are_refused_and_closed(front: int) -> None:
    """A 64 KiB header, 1,000 headers, 10 MB bodies (WHEP, JSON, chunked): a 4xx, and the connection closed at
    once (before, a refused 10 MB body was read to its end and the connection kept alive)."""
    cases = attacks.oversized_cases(front, "not-a-token")
    for name in ("64 KiB header line", "1,000 headers", "WHEP offer 10 MB", "WHEP offer 10 MB chunked",
                 "JSON 10 MB", "JSON 10 MB to the token endpoint"):  # fmt: skip
        head, body = cases[name]
        status, closed, took = await attacks.raw_request(front, head, body, timeout=5)
        assert status is not None and 400 <= status < 500 and closed and took < 3, (name, status, closed, took)
    assert await healthz_ms(front) < 500


async def test_a_stalled_body_is_cut(front: int) -> None:
    """A body that stops halfway holds the connection for `body_s`, not for as long as the client likes."""
    head = (f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1:{front}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n").encode()  # fmt: skip
    status, closed, took = await attacks.raw_request(front, head, b"grant_type=client_cre", timeout=5)
    assert status is None and closed and SHORT.body_s - 0.2 < took < SHORT.body_s + 1.5, (status, closed, took)
    assert await healthz_ms(front) < 500


# --- against the real server, with a viewer -----------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def attacked(tmp_path_factory: pytest.TempPathFactory, h264_camera: str) -> AsyncIterator[Target]:
    async with target(tmp_path_factory.mktemp("floods"), h264_camera, tokens=3) as t:
        yield t


def assert_played(row: dict[str, object]) -> None:
    """The viewer kept its frame rate through the attack and after it."""
    windows = row["windows"]
    assert isinstance(windows, list)
    during = windows[1]
    assert during["fps_mean"] >= 20, row  # the machine's own noise: single seconds of 17-19 fps with no attack
    for window in windows[1:]:
        assert window["max_gap_ms"] < 1000 and window["healthz_failed"] == 0 and window["healthz_p95_ms"] < 500, row


@pytest.mark.asyncio(loop_scope="module")
async def test_whep_offer_flood_is_capped(attacked: Target) -> None:
    row = await attacked.measure(attacks.whep_flood_one_token, 3.0, settle=1.0, rate=60)
    status = row["result"]["status"]
    assert status.get("201", 0) <= 64 and status.get("429", 0) >= 100, row
    assert_played(row)


@pytest.mark.asyncio(loop_scope="module")
async def test_garbage_at_the_media_port(attacked: Target) -> None:
    row = await attacked.measure(attacks.media_garbage, 3.0, settle=1.0, rate=10_000)
    assert row["result"]["datagrams"] > 20_000, row
    assert_played(row)


@pytest.mark.asyncio(loop_scope="module")
async def test_garbage_camera_at_100_mbit_beside_the_viewer(attacked: Target) -> None:
    """On the viewer's worker: bytes are not progress (the camera stalls, never a unit), the viewer plays on."""
    row = await attacked.measure(attacks.garbage_camera, 7.0, settle=1.0, mbit=100)
    result = row["result"]
    assert result["units"] == 0 and result["flooding_s"] > 3 and result["mbit_per_s_flooding"] > 50, result
    assert_played(row)


@pytest.mark.asyncio(loop_scope="module")
async def test_camera_answering_a_byte_a_second_times_out(attacked: Target) -> None:
    row = await attacked.measure(attacks.trickle_camera, 8.0, settle=1.0)
    result = row["result"]
    assert result["errors"] and result["errors"].get("timeout", 0) >= 1, result
    assert str(result["last_error"]).startswith("timeout"), result
    assert result["connections"] >= 2, result  # and it came back (backoff), to be timed out again
    assert_played(row)


@pytest.mark.asyncio(loop_scope="module")
async def test_denial_flood_costs_the_audit_a_few_records(attacked: Target) -> None:
    row = await attacked.measure(attacks.denial_flood, 1.0, settle=1.0, requests=200)
    result = row["result"]
    assert sum(result["status"].values()) == 200 and set(result["status"]) <= {"401", "403", "429"}, result
    added = result["audit_records_added"]
    assert 0 < sum(added.values()) <= 40, added  # a burst per source, then one summary per interval
    assert added.get("access.suppressed", 0) >= 1, added
    assert_played(row)


async def test_malformed_requests_cannot_fill_the_log(front: int, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp logged each malformed request with a traceback at ERROR; now one line per interval."""
    head, body = attacks.oversized_cases(front, "x")["64 KiB header line"]
    for _ in range(30):
        status, _, _ = await attacks.raw_request(front, head, body, timeout=5)
        assert status == 400
    records = [r for r in caplog.records if "Error handling request" in r.getMessage()]
    assert len(records) == 1 and records[0].levelname == "INFO" and not records[0].exc_info, records


@pytest.mark.asyncio(loop_scope="module")
async def test_an_offer_split_across_segments_is_read_whole(attacked: Target) -> None:
    """A slow link delivers an offer in pieces: WHEP read only what had arrived (a truncated offer, 400)."""
    offer = (await attacks._an_offer()).encode()
    head = (f"POST /whep/{attacked.camera} HTTP/1.1\r\nHost: 127.0.0.1:{attacked.port}\r\n"
            f"Authorization: Bearer {attacked.tokens[-1]}\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(offer)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", attacked.port)
    try:
        writer.write(head + offer[: len(offer) // 2])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(offer[len(offer) // 2 :])
        async with asyncio.timeout(10):
            status = (await reader.readline()).decode()
            answer = (await reader.read()).decode()
    finally:
        writer.close()
    assert status.startswith("HTTP/1.1 201"), (status, answer[-500:])
    location = next(
        line.split(":", 1)[1].strip() for line in answer.splitlines() if line.lower().startswith("location:")
    )
    async with aiohttp.ClientSession(attacked.base) as http:
        async with http.delete(location, headers={"Authorization": f"Bearer {attacked.tokens[-1]}"}) as res:
            assert res.status == 200
