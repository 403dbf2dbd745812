"""Viewers must not choose where the server sends UDP (mediaserver/viewer_networks.py): remote candidates are
capped per session and must point into the viewer networks, so a hostile offer aimed at local ports draws no
STUN, and a trickle PATCH past the cap is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers.access import FAST, auth, grant
from helpers.viewers import Viewer

from mediaserver.cluster.worker_client import LocalWorkerClient
from mediaserver.egress import Egress
from mediaserver.hub import Hub
from mediaserver.viewer_networks import (
    DEFAULT,
    LOOPBACK,
    MAX_CANDIDATES,
    CandidateGuard,
    ViewerNetworks,
    default_for,
)
from signaling.access import ACCESS
from signaling.app import create_app

CAMERAS: list[dict[str, Any]] = [{"id": "cam1", "name": "Gate", "district": "Jung-gu", "lat": 37.56, "lon": 126.97}]
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


def test_default_networks_refuse_loopback_link_local_and_the_servers_own_addresses() -> None:
    own = frozenset({"192.0.2.2", "2001:db8::2"})
    for address in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "169.254.10.1", "fe80::1%eth0",
                    "192.0.2.2", "2001:db8::2", "0.0.0.0", "::", "224.0.0.251", "ff02::1", "255.255.255.255",
                    "host.local"):  # fmt: skip
        assert DEFAULT.refuses(address, own), address
    for address in ("203.0.113.7", "10.1.2.3", "192.168.0.20", "2001:db8::99"):
        assert DEFAULT.refuses(address, own) is None, address


def test_configured_networks_allow_exactly_those() -> None:
    agency = ViewerNetworks.parse(["10.0.0.0/8", "192.168.7.0/24"])
    assert agency.refuses("10.20.30.40", frozenset({"10.20.30.40"})) is None  # the operator listed it
    assert agency.refuses("192.168.7.9", frozenset()) is None
    assert agency.refuses("192.168.8.9", frozenset()) and agency.refuses("203.0.113.7", frozenset())
    assert LOOPBACK.refuses("127.0.0.1", frozenset({"127.0.0.1"})) is None and LOOPBACK.refuses("10.0.0.1", frozenset())
    assert LOOPBACK.refuses("224.0.0.1", frozenset())  # never a multicast address
    with pytest.raises(ValueError):
        ViewerNetworks.parse(["10.0.0.0/33"])
    # a server gathering on loopback only can only be reached from its own machine: loopback by default
    assert default_for(["127.0.0.1"]) is LOOPBACK and default_for(None) is DEFAULT
    assert default_for(["127.0.0.1", "192.0.2.2"]) is DEFAULT


def test_a_guard_counts_udp_candidates_and_ignores_those_past_its_cap() -> None:
    guard = CandidateGuard(DEFAULT, frozenset(), limit=3)
    assert guard("203.0.113.7", "tcp") and guard.seen == 0  # aioice never pairs TCP: refused, not counted
    assert [guard(f"203.0.113.{i}", "udp") is None for i in range(5)] == [True, True, True, False, False]
    assert guard.room(0) and not guard.room(1)


@pytest.fixture
def hub(live_hub: Hub) -> Hub:
    return live_hub


class Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.datagrams += 1


async def targets(count: int) -> list[tuple[asyncio.DatagramTransport, Counter, int]]:
    """UDP sockets on 127.0.0.1 that count what they receive: the ports a hostile viewer points the server at."""
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(count):
        transport, counter = await loop.create_datagram_endpoint(Counter, local_addr=("127.0.0.1", 0))
        out.append((transport, counter, transport.get_extra_info("sockname")[1]))
    return out


def candidate(i: int, port: int, host: str = "127.0.0.1") -> str:
    return f"a=candidate:h{i} 1 udp {2130706431 - i} {host} {port} typ host"


def aimed_at(sdp: str, ports: list[int]) -> str:
    """The viewer's offer with its candidates replaced by ones at `ports`."""
    lines = [line for line in sdp.split("\r\n") if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    at = next(i for i, line in enumerate(lines) if line.startswith("a=ice-pwd:")) + 1
    return "\r\n".join(lines[:at] + [candidate(i, p) for i, p in enumerate(ports)] + lines[at:])


async def test_an_offer_aimed_at_loopback_ports_draws_no_stun_from_a_server_on_default_networks(hub: Hub) -> None:
    hostile, trickled, control = await targets(20), await targets(5), await targets(20)
    guarded = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"], viewer_networks=DEFAULT)
    allowing = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"], viewer_networks=LOOPBACK)  # as the tests' own
    try:
        sdp = await Viewer().offer()
        await guarded.offer("cam1", aimed_at(sdp, [p for _, _, p in hostile]))
        await allowing.offer("cam1", aimed_at(sdp, [p for _, _, p in control]))
        trickling, _ = await guarded.offer("cam1", aimed_at(sdp, []))  # then trickled in, within the cap:
        await guarded.patch(trickling, "\r\n".join(candidate(i, p) for i, (_, _, p) in enumerate(trickled)))
        await asyncio.sleep(2.0)  # aioice's checks and their retransmissions
        assert [c.datagrams for _, c, _ in hostile + trickled] == [0] * 25
        # the same offer to a server that allows loopback: checks go out, to the first MAX_CANDIDATES only
        reached = [c.datagrams > 0 for _, c, _ in control]
        assert reached == [True] * MAX_CANDIDATES + [False] * (20 - MAX_CANDIDATES), reached
    finally:
        await guarded.close_all()
        await allowing.close_all()
        for transport, _, _ in hostile + trickled + control:
            transport.close()


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[TestClient[Any, Any]]:
    egress = Egress({"cam1": hub}.get, ice_hosts=["127.0.0.1"])
    app = create_app(LocalWorkerClient(egress), lambda: CAMERAS, access=FAST)
    async with TestClient(TestServer(app, host="127.0.0.1"), headers=auth(grant(app[ACCESS], CAMERAS[0]))) as client:
        yield client
    await egress.close_all()


async def test_a_trickle_patch_past_the_candidate_cap_is_refused(client: TestClient[Any, Any]) -> None:
    sdp = (await Viewer().offer()).replace("a=end-of-candidates\r\n", "")  # more to come, by PATCH
    offered = sum(1 for line in sdp.split("\r\n") if line.startswith("a=candidate:") and " udp " in line.lower())
    res = await client.post("/whep/cam1", data=sdp, headers={"Content-Type": "application/sdp"})
    assert res.status == 201
    location = res.headers["Location"]
    room = MAX_CANDIDATES - offered
    too_many = "\r\n".join(candidate(i, 40000 + i, "203.0.113.7") for i in range(room + 1))
    res = await client.patch(location, data=too_many, headers=FRAG)
    body = await res.json()
    assert res.status == 400 and "too many ICE candidates" in body["detail"], body
    tcp = "a=candidate:t1 1 tcp 1518280447 203.0.113.7 9 typ host tcptype active"  # draws nothing: not counted
    fits = "\r\n".join([candidate(i, 40000 + i, "203.0.113.7") for i in range(room)] + [tcp])
    assert (await client.patch(location, data=fits, headers=FRAG)).status == 204  # the refused one added nothing
    res = await client.patch(location, data=candidate(99, 40099, "203.0.113.7"), headers=FRAG)
    assert res.status == 400  # full now
