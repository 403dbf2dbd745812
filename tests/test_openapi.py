"""The API is documented (issue 12 item 7): /api/openapi.json describes exactly the routes the aiohttp router
has, both ways, with each path's parameters named as in the route."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from signaling.app import create_app
from signaling.openapi import document

NO_HUBS: dict[str, Hub] = {}
PAGES = ("/", "/web")  # the console's static files: pages, not API
METHODS = {"get", "post", "put", "patch", "delete", "options"}


def app(web_dir: Path | None) -> web.Application:
    local = LocalWorkerClient(Egress(NO_HUBS.get))
    return create_app(local, list, ops=local, web_dir=web_dir)


def routed(application: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route; HEAD is implied by GET."""
    out = set()
    for route in application.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method != "HEAD" and path not in PAGES:
            out.add((route.method.lower(), path))
    return out


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def test_every_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    routes, doc = routed(app(tmp_path)), documented(document())
    assert routes - doc == set(), "routes without an OpenAPI description"
    assert doc - routes == set(), "documented but not served"


def test_the_document_is_well_formed() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    schemes, schemas = doc["components"]["securitySchemes"], doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["responses"], where
            given = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert given == names, f"{where}: path parameters {given} != {names}"
            for requirement in op["security"]:
                assert set(requirement) <= set(schemes), where
    refs = re.findall(r"#/components/schemas/(\w+)", str(doc))
    assert refs and set(refs) <= set(schemas)


async def test_served_at_api_openapi_json() -> None:
    client: TestClient[Any, Any] = TestClient(TestServer(app(None), host="127.0.0.1"))
    await client.start_server()
    try:
        res = await client.get("/api/openapi.json")
        assert res.status == 200 and (await res.json()) == document()
    finally:
        await client.close()
