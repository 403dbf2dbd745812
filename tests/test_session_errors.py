"""Session errors (mediaserver/errors.py): one family from egress through the worker RPC to the WHEP answer.

An offer aiortc cannot use is a 400 "bad offer"; a server bug while answering one is a 500 with its stack in the
log, never a 400; every kind a worker sends comes back as the same class, with its HTTP status."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, auth, grant
from helpers.viewers import Viewer

from mediaserver import egress as egress_module
from mediaserver import errors
from mediaserver.cluster.remote_worker import RemoteWorkerClient
from mediaserver.cluster.supervisor import Endpoint
from mediaserver.cluster.worker_client import LocalWorkerClient, WorkerClient
from mediaserver.cluster.worker_rpc import SECRET_HEADER, create_rpc_app
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from mediaserver.worker import Worker, WorkerSettings
from signaling.access import ACCESS
from signaling.app import create_app

CAMERAS: list[dict[str, Any]] = [{"id": "cam1", "name": "Gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97}]
SECRET = "s3cret"


@pytest.fixture
def hub(live_hub: Hub) -> Hub:
    return live_hub


@pytest.fixture
async def egress(hub: Hub) -> AsyncIterator[Egress]:
    egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
    yield egress
    await egress.close_all()


async def whep_client(worker: WorkerClient) -> TestClient[Any, Any]:
    app = create_app(worker, lambda: CAMERAS, access=FAST)
    client = TestClient(TestServer(app, host="127.0.0.1"), headers=auth(grant(app[ACCESS], CAMERAS[0])))
    await client.start_server()
    return client


@pytest.fixture
async def client(egress: Egress) -> AsyncIterator[TestClient[Any, Any]]:
    client = await whep_client(LocalWorkerClient(egress))
    yield client
    await client.close()


async def post_offer(client: TestClient[Any, Any], sdp: str) -> Any:
    return await client.post("/whep/cam1", data=sdp, headers={"Content-Type": "application/sdp"})


def without(sdp: str, *prefixes: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefixes))


async def test_offers_aiortc_cannot_use_are_bad_offers(client: TestClient[Any, Any], egress: Egress) -> None:
    sdp = await Viewer().offer()
    for broken, reason in (
        (without(sdp, "a=rtcp-mux"), "RTCP mux"),  # aiortc's setRemoteDescription: ValueError
        (without(sdp, "a=ice-pwd"), "ICE"),  # ValueError too
        (without(sdp, "a=setup", "a=fingerprint"), "DTLS"),  # aiortc would fail on it with an AttributeError
    ):
        res = await post_offer(client, broken)
        body = await res.json()
        assert res.status == 400 and body["error"] == "bad offer" and reason in body["detail"], body
    assert egress.sessions == []


async def test_a_server_bug_answering_an_offer_is_a_500_with_its_stack_logged(
    client: TestClient[Any, Any], egress: Egress, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("a bug in the server")

    monkeypatch.setattr(egress_module, "h264_capabilities", broken)
    sdp = await Viewer().offer()
    with caplog.at_level(logging.ERROR):
        res = await post_offer(client, sdp)
    assert res.status == 500 and res.content_type == "application/json"
    body = await res.json()
    assert body["error"] == "server error" and "a bug" not in body["detail"]  # the client is told nothing inside
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert logged and "a bug in the server" in str(logged[0])  # the stack is in the log
    assert egress.sessions == []
    monkeypatch.undo()
    assert (await post_offer(client, sdp)).status == 201  # nothing leaked: the next offer is answered


def test_every_kind_comes_back_from_the_wire_as_the_same_class() -> None:
    for cls in errors.FAMILY:
        exc = errors.Overloaded("full", 7, {"lag_ms": 80}) if cls is errors.Overloaded else cls("why")
        back = errors.from_wire(errors.to_wire(exc))
        assert type(back) is cls and str(back) == str(exc) and back.status == cls.status
    overloaded = errors.from_wire(errors.to_wire(errors.Overloaded("full", 7, {"lag_ms": 80})))
    assert isinstance(overloaded, errors.Overloaded)
    assert (overloaded.retry_after_s, overloaded.load) == (7, {"lag_ms": 80})
    assert errors.http_answer(overloaded) == (
        503, {"error": "overloaded", "detail": "full", "retry_after_s": 7, "load": {"lag_ms": 80}}, {"Retry-After": "7"}
    )  # fmt: skip
    assert type(errors.from_wire({"error": "from_a_newer_worker", "detail": "x"})) is errors.ServerError
    assert len(errors.KINDS) == len(errors.FAMILY)  # one kind per class


class OneWorker:
    """Where the worker is: one RPC server (what the supervisor tells RemoteWorkerClient)."""

    count = 1

    def __init__(self, url: str) -> None:
        self.url = url

    def endpoint(self, index: int) -> Endpoint | None:
        return Endpoint(self.url, 1)

    def describe(self) -> list[dict[str, object]]:
        return [{"index": 0, "up": True}]

    async def resize(self, count: int) -> None:
        raise NotImplementedError


async def test_a_worker_process_bug_is_a_500_at_the_front_and_logged_with_its_stack_on_the_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Worker(WorkerSettings(ice_hosts=["127.0.0.1"]))

    async def broken(camera_id: str, sdp: str, profile: str | None = None) -> tuple[str, str]:
        raise RuntimeError("a bug in the worker")

    monkeypatch.setattr(worker.egress, "offer", broken)
    async with TestClient(TestServer(create_rpc_app(worker, SECRET, "worker-0"), host="127.0.0.1")) as rpc:
        res = await rpc.post("/offer", json={"camera_id": "cam1", "sdp": "v=0"}, headers={SECRET_HEADER: SECRET})
        assert res.status == 500 and (await res.json())["error"] == "internal"

        remote = RemoteWorkerClient(["cam1"], OneWorker(str(rpc.make_url("")).rstrip("/")), SECRET)
        await remote.start()
        front = await whep_client(remote)
        try:
            with caplog.at_level(logging.ERROR):
                res = await post_offer(front, await Viewer().offer())
            assert res.status == 500 and (await res.json())["error"] == "server error"
            stacks = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
            assert stacks and stacks[0].name == "mediaserver.cluster.worker_rpc"
            with pytest.raises(errors.UnknownCamera):  # a session error the worker sends: its own class again
                await remote.snapshot("cam1")  # (this worker has no cameras)
        finally:
            await front.close()
            await remote.stop()
