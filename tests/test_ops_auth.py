"""The HTTP edge and the ops guard: Host is checked on every request (DNS rebinding), X-Forwarded-For is believed
only from trusted proxies, and resizing the workers needs an admin credential besides the scrape allow-list."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, admin, agency, auth, basic

from mediaserver.cli.commands import _parser, _settings, main
from mediaserver.cli.serve import default_hosts
from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.access import ACCESS, offline
from signaling.app import create_app
from signaling.edge import EdgeSettings, forwarded_client, host_allowed, split_host
from signaling.ops_api import OpsSettings

NO_HUBS: dict[str, Hub] = {}


async def serve(edge: EdgeSettings | None = None, allow: list[str] | None = None) -> TestClient[Any, Any]:
    local = LocalWorkerClient(Egress(NO_HUBS.get))
    ops = OpsSettings(metrics_allow=allow or ["127.0.0.1/32"])
    app = create_app(local, list, access=FAST, ops=local, ops_settings=ops, edge=edge, web_dir=None)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    client = await serve()
    yield client
    await client.close()


def denials(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    return [r for r in client.app[ACCESS].audit.all() if r["event"] == "access.denied"]


async def resize(client: TestClient[Any, Any], headers: dict[str, str]) -> Any:
    return await client.post("/ops/workers", json={"count": 2}, headers=headers)


async def test_resizing_workers_needs_an_admin(client: TestClient[Any, Any]) -> None:
    access = client.app[ACCESS]
    res = await resize(client, {})  # the review's reproduction: no credentials
    assert res.status == 401 and res.headers["WWW-Authenticate"].startswith("Bearer")
    police, secret = agency(access)
    res = await resize(client, basic(police.client_id, secret))
    assert res.status == 403 and (await res.json())["error"] == "admins only"
    auditor, secret = agency(access, "privacy-office", "auditor")
    assert (await resize(client, basic(auditor.client_id, secret))).status == 403
    res = await resize(client, admin(access))  # past the guard: in-process workers cannot be resized
    assert res.status == 409 and (await res.json())["error"] == "unsupported"
    assert [r["detail"]["status"] for r in denials(client)] == [401, 403, 403]
    assert all(r["detail"]["path"] == "/ops/workers" for r in denials(client))


async def test_an_admin_api_token_resizes_too_and_admins_do_not_act_on_incidents(client: TestClient[Any, Any]) -> None:
    city = admin(client.app[ACCESS])
    res = await client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=city)
    token = (await res.json())["access_token"]
    assert (await resize(client, auth(token))).status == 409
    res = await client.post("/api/incidents", json={}, headers=city)
    assert res.status == 403 and "admins cannot act on incidents" in (await res.json())["error"]


async def test_a_web_page_cannot_resize_even_with_admin_credentials(client: TestClient[Any, Any]) -> None:
    city = admin(client.app[ACCESS])
    res = await client.post("/ops/workers", json={"count": 2}, headers={**city, "Origin": "http://evil.example"})
    assert res.status == 403
    res = await client.post("/ops/workers", data="count=2", headers=city)
    assert res.status == 403


async def test_a_foreign_host_is_refused_on_every_request(client: TestClient[Any, Any]) -> None:
    port = client.server.port
    for path in ("/ops/workers", "/healthz", "/api/cameras", "/whep/cam1"):
        res = await client.get(path, headers={"Host": "attacker.example"})  # DNS rebinding to 127.0.0.1
        assert res.status == 421 and (await res.json())["error"] == "misdirected request", path
    res = await client.options("/whep/cam1", headers={"Host": f"attacker.example:{port}", "Origin": "http://x",
                                                     "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert res.status == 421  # a preflight too
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "LOCALHOST."):
        assert (await client.get("/ops/workers", headers={"Host": host})).status == 200, host


async def test_a_request_without_host_is_refused(client: TestClient[Any, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(b"GET /ops/workers HTTP/1.0\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert status.split()[1] == b"400"


async def test_configured_host_names() -> None:
    client = await serve(EdgeSettings(allowed_hosts=["cctv.seoul.example", "[::1]:8443"]))
    try:
        assert (await client.get("/healthz", headers={"Host": "cctv.seoul.example"})).status == 200
        assert (await client.get("/healthz", headers={"Host": "cctv.seoul.example:8080"})).status == 200
        assert (await client.get("/healthz", headers={"Host": "[::1]:8443"})).status == 200
        assert (await client.get("/healthz", headers={"Host": "[::1]:8080"})).status == 421
        assert (await client.get("/healthz")).status == 421  # 127.0.0.1 is not configured any more
    finally:
        await client.close()


async def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    behind = {"X-Forwarded-For": "10.9.1.2"}  # a scraper on the agency network, through the proxy
    plain = await serve(allow=["10.9.0.0/16"])
    try:
        assert (await plain.get("/ops/workers", headers=behind)).status == 403  # anyone can send the header
        assert (await resize(plain, behind)).status == 403
    finally:
        await plain.close()
    proxied = await serve(EdgeSettings(trusted_proxies=["127.0.0.1/32"]), allow=["10.9.0.0/16"])
    try:
        assert (await proxied.get("/ops/workers", headers=behind)).status == 200
        assert (await proxied.get("/ops/workers")).status == 403  # the proxy itself is not the scraper
        spoofed = {"X-Forwarded-For": "10.9.1.2, 198.51.100.7"}  # the client forged the first hop
        assert (await proxied.get("/ops/workers", headers=spoofed)).status == 403
        res = await resize(proxied, {**behind, "X-Forwarded-For": "10.9.1.2"})
        assert res.status == 401
        assert denials(proxied)[-1]["remote"] == "10.9.1.2"  # the audit names the client, not the proxy
    finally:
        await proxied.close()


def test_host_and_forwarded_parsing() -> None:
    proxies = [ipaddress.ip_network("10.0.0.0/24")]
    assert split_host("[::1]:8080") == ("::1", 8080) and split_host("Example.ORG.") == ("example.org", None)
    assert split_host("::1") == ("::1", None) and split_host("a:b") == ("a", None)
    assert host_allowed("localhost:9", ["localhost"]) and not host_allowed("localhost:9", ["localhost:8"])
    assert not host_allowed("localhost.attacker.example", ["localhost"]) and not host_allowed("", ["localhost"])
    assert forwarded_client("10.0.0.1", "192.0.2.1, 10.0.0.2", proxies) == "192.0.2.1"  # two proxies deep
    assert forwarded_client("192.0.2.9", "192.0.2.1", proxies) is None  # not from a proxy: the peer it is
    assert forwarded_client("10.0.0.1", "garbage", proxies) is None
    assert forwarded_client("10.0.0.1", "", proxies) is None
    assert default_hosts("127.0.0.1", 8080) == ["localhost:8080", "127.0.0.1:8080", "[::1]:8080"]
    assert default_hosts("cctv.local", 80)[-1] == "cctv.local:80" and default_hosts("0.0.0.0", 80)[-1] == "[::1]:80"


def test_the_cli_makes_admins_and_reads_the_edge_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "gt.db")
    assert main(["clients", "add", "--db", db, "--agency", "city-video", "--name", "ops desk", "--role", "admin",
                 "--json"]) == 0  # fmt: skip
    made = json.loads(capsys.readouterr().out)
    access = offline(db)
    try:
        found = access.clients.authenticate(made["client_id"], made["client_secret"])
        assert found is not None and found.is_admin
    finally:
        access.close()
    options = "serve --http 127.0.0.1:9000 --allowed-hosts cctv.example,[::1]:9000"
    options += " --trusted-proxies 10.0.0.0/8,192.0.2.1/32 --sessions-per-token 8"
    args = _parser().parse_args(options.split())
    settings = _settings(args)
    assert settings.allowed_hosts == ["cctv.example", "[::1]:9000"]
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.0.2.1/32"]
    assert settings.access.quotas.sessions_per_token == 8 and settings.access.quotas.sessions_per_client == 256
    assert _settings(_parser().parse_args(["serve"])).allowed_hosts is None  # default_hosts at start
