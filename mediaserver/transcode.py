"""Transcoding profiles: what a viewer may ask for, and when the camera's own stream already is that.

    POST /whep/{camera_id}?profile=main   the camera as it is: H.264 passed through (opened live by the
                                          bridge); an H.265 camera transcoded to H.264 at its own size
    POST /whep/{camera_id}?profile=low    at most 640x360 (aspect kept, never upscaled), ~400 kbit/s H.264,
                                          for grids and weak links; the camera's registered sub-stream is
                                          passed through instead when the worker ingests one

The pipelines themselves are bridge.py's: a transcode is a `Bridge` that never switches to passthrough, one
per (camera, profile), shared by all its viewers, started by the first and stopped after the last
(`BridgePool`). This module holds only the profiles, so the front can validate a name without touching
media.
"""

from __future__ import annotations

from dataclasses import dataclass


def codec_name(codec: str) -> str:
    """The decoder name for a camera codec ("h264" | "hevc")."""
    return "hevc" if codec.lower() in ("h265", "hevc") else "h264"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    max_width: int | None = None  # None: the camera's own size
    max_height: int | None = None
    bit_rate: int | None = None  # bit/s; None: the camera's own (estimated from its GOP)
    substream: bool = False  # prefer the camera's sub-stream when the worker has one

    def passthrough(self, codec: str) -> bool:
        """Whether the camera's own stream is already this profile for a browser (never transcode it)."""
        return codec_name(codec) == "h264" and self.max_height is None and self.bit_rate is None

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The output size for a source of this size: scaled down to fit, aspect kept, even, never up."""
        scale = min(
            1.0,
            (self.max_width or width) / width,
            (self.max_height or height) / height,
        )
        return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


MAIN = Profile("main")
LOW = Profile("low", max_width=640, max_height=360, bit_rate=400_000, substream=True)
PROFILES: dict[str, Profile] = {p.name: p for p in (MAIN, LOW)}


class UnknownProfile(ValueError):
    pass


def get_profile(name: str | None) -> Profile:
    """The profile of this name (None: main). Raises UnknownProfile."""
    try:
        return PROFILES[name or MAIN.name]
    except KeyError:
        raise UnknownProfile(f"unknown profile {name!r}; one of: {', '.join(PROFILES)}") from None
