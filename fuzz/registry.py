"""Every fuzz target, its seeds and the packages atheris instruments for it (fuzz/run.py, the CI test)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from fuzz import incident_targets, rtsp_targets, targets, token_targets, udp_target


@dataclass(frozen=True)
class Target:
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    instrument: tuple[str, ...]  # packages whose Python atheris instruments for coverage (besides fuzz)


C_PARSERS = ("h264", "h265", "rtp", "framing")
TARGETS: dict[str, Target] = {
    name: Target(targets.TARGETS[name], partial(targets.seeds, name), ()) for name in C_PARSERS
}
TARGETS |= {
    "udp": Target(udp_target.udp_datagrams, udp_target.seeds, ()),
    "rtsp": Target(rtsp_targets.rtsp_message, rtsp_targets.rtsp_seeds, ("mediaserver.rtsp",)),
    "sdp": Target(rtsp_targets.sdp, rtsp_targets.sdp_seeds, ("mediaserver.rtsp",)),
    "whep": Target(rtsp_targets.whep_offer, rtsp_targets.whep_seeds, ("mediaserver.egress", "aiortc.sdp")),
    "json_body": Target(incident_targets.json_body, incident_targets.json_seeds, ("signaling",)),
    "incident": Target(incident_targets.incident, incident_targets.incident_seeds, ("signaling",)),
    "token": Target(token_targets.token, token_targets.token_seeds, ("signaling",)),
    "token_forged": Target(token_targets.token_forged, token_targets.token_forged_seeds, ("signaling",)),
}
