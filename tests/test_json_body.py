"""Every JSON endpoint reads its body the same way (signaling/json_body.py): all of it, however TCP splits
it; 413 past the limit, chunked or not; 400, never 500, for a body that is not JSON or nests too deep
(issue 15 item 15: `content.read(n)` returned the first segment only, and `[[[[...` raised RecursionError)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, admin, agency, basic, until

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS
from signaling.app import create_app
from signaling.json_body import MAX_DEPTH, MAX_JSON, depth

INCIDENT = {"service": "112-video", "basis": "PIPA art. 25(1)4", "summary": 'a "[[quoted\\" bracket" [{',
            "geometry": {"type": "Point", "coordinates": [126.978, 37.5665]}}  # fmt: skip


def no_hubs(camera_id: str) -> Hub | None:
    return None


JSON = {"Content-Type": "application/json"}


class Front:
    def __init__(self, http: TestClient[Any, Any], headers: dict[str, str], admin: dict[str, str]) -> None:
        self.http, self.headers, self.admin = http, headers, admin
        assert http.port is not None
        self.port: int = http.port


@pytest.fixture
async def front(tmp_path: Any) -> AsyncIterator[Front]:
    local = LocalWorkerClient(Egress(no_hubs))
    app = create_app(local, lambda: [], db=tmp_path / "gt.db", access=FAST, ops=local, web_dir=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        police, secret = agency(app[ACCESS])
        yield Front(http, basic(police.client_id, secret), admin(app[ACCESS]))


async def raw_post(
    port: int, path: str, headers: dict[str, str], pieces: list[bytes], pause_s: float = 0.05, chunked: bool = False
) -> tuple[int, dict[str, Any]]:
    """POST over a plain socket, each piece its own TCP segment (Nagle off, a pause between)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    length = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(sum(map(len, pieces)))}
    lines = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Connection": "close", **length,
             **headers}  # fmt: skip
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items()) + "\r\n"
    try:
        writer.write(head.encode())
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await asyncio.wait_for(writer.drain(), 5)
            await asyncio.sleep(pause_s)
        if chunked:
            writer.write(b"0\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:  # the server answered early (413) and closed while we still sent
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body) if body.strip() else {}


def split(raw: bytes, n: int) -> list[bytes]:
    cuts = sorted(random.Random(n).sample(range(1, len(raw)), n - 1))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


async def test_json_split_across_tcp_segments_is_read_whole(front: Front) -> None:
    raw = json.dumps({**INCIDENT, "until": until()}).encode()
    status, body = await raw_post(front.port, "/api/incidents", front.headers, split(raw, 6))
    assert status == 201, body
    assert body["summary"] == INCIDENT["summary"]
    status, body = await raw_post(front.port, "/api/incidents", front.headers, split(raw, 4), chunked=True)
    assert status == 201, body


async def test_limits_hold_however_the_body_arrives(front: Front) -> None:
    big = b'{"summary": "' + b"x" * (MAX_JSON + 10) + b'"}'
    status, body = await raw_post(front.port, "/api/incidents", front.headers, [big[:1000], big[1000:]],
                                  chunked=True)  # fmt: skip
    assert status == 413 and body["field"] == "body"
    h = {**front.headers, "Content-Type": "application/json"}
    res = await front.http.post("/api/incidents", data=big, headers=h)
    assert res.status == 413
    res = await front.http.post("/api/incidents", data=b"{}", headers={**front.headers, "Content-Type": "text/json"})
    assert res.status == 415
    res = await front.http.post("/api/incidents", data=b'{"a": "\xff"}', headers=h)
    assert res.status == 400 and (await res.json())["field"] == "body"


@pytest.mark.parametrize("path", ["/api/incidents", "/ops/workers"])
async def test_deep_nesting_is_a_400_not_a_500(front: Front, path: str) -> None:
    h = {**(front.admin if path.startswith("/ops") else front.headers), **JSON}
    n = 100_000 if path == "/api/incidents" else 2000  # the ops body limit is 4 KiB; json recurses ~1,000 deep
    for body in (b"[" * n, b"[" * n + b"]" * n, b'{"a":' * (n // 5) + b"1" + b"}" * (n // 5)):
        res = await front.http.post(path, data=body, headers=h)
        assert res.status == 400, await res.text()
        err = await res.json()
        assert err["field"] == "body" and "deeper than 32" in err["error"]
    nested = json.dumps({**INCIDENT, "until": until(), "summary": [[[[[]]]]]}).encode()
    res = await front.http.post("/api/incidents", data=nested, headers={**front.headers, **JSON})
    assert res.status == 400 and (await res.json())["field"] == "summary"  # shallow: parsed, then validated


def test_depth_ignores_brackets_in_strings() -> None:
    assert depth(b"") == depth(b"1") == 0
    assert depth(b'["]]]]", "\\"[[[", "\\\\", [[]]]') == 3
    assert depth(json.dumps([[{"k": "[" * 100}]] * 3).encode()) == 3
    ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert depth(ok) == MAX_DEPTH and depth(b"[" + ok + b"]") == MAX_DEPTH + 1
    rng = random.Random(5)

    def tree(level: int) -> Any:
        r = rng.random()
        if level > 6 or r < 0.3:
            return rng.choice(['a"]\\', "[{", "\\", 1, None, ']]\\"[', "é"])
        if r < 0.65:
            return [tree(level + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["k", "[", '\\"']): tree(level + 1) for _ in range(rng.randint(0, 3))}

    def true_depth(o: Any) -> int:
        if isinstance(o, dict | list):
            return 1 + max((true_depth(v) for v in (o.values() if isinstance(o, dict) else o)), default=0)
        return 0

    for _ in range(500):
        doc = tree(0)
        assert depth(json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()) == true_depth(doc)
