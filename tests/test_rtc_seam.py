"""mediaserver/rtc_seam.py: its import-time check passes on the installed aiortc/aioice/pylibsrtp, fails loudly
(naming the name and the versions) when one of the private names it needs is gone, and the three libraries are
pinned to the minor versions it knows."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCRtpSender
from packaging.requirements import Requirement
from packaging.version import Version

from mediaserver import rtc_seam

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("aiortc", "aioice", "pylibsrtp")


def installed(name: str) -> str:
    return importlib.metadata.version(name)


def test_the_check_passes_on_the_installed_versions() -> None:
    rtc_seam.check()  # it also ran at import; again, so a failure shows here by name
    assert rtc_seam.versions() == ", ".join(f"{n} {installed(n)}" for n in LIBRARIES)


def assert_loud(error: pytest.ExceptionInfo[rtc_seam.SeamError], name: str) -> None:
    text = str(error.value)
    assert name in text
    assert all(f"{n} {installed(n)}" in text for n in LIBRARIES), text
    assert isinstance(error.value, ImportError)  # at import, the server does not start


def test_a_method_gone_from_the_sender_class_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCRtpSender, "_send_rtcp")
    with pytest.raises(rtc_seam.SeamError) as error:
        rtc_seam.check()
    assert_loud(error, "RTCRtpSender._send_rtcp")


def test_a_name_mangled_attribute_gone_from_a_sender_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    init = RTCRtpSender.__init__

    def without_event(self: RTCRtpSender, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        del self._RTCRtpSender__rtcp_exited  # type: ignore[attr-defined]  # as if aiortc renamed it

    monkeypatch.setattr(RTCRtpSender, "__init__", without_event)
    with pytest.raises(rtc_seam.SeamError) as error:
        rtc_seam.check()
    assert_loud(error, "_RTCRtpSender__rtcp_exited")


def test_aioice_no_longer_validating_through_the_hook_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    # as if aioice stopped calling its module's validate_remote_candidate: the candidate filter would do nothing
    monkeypatch.setattr(aioice.ice, "validate_remote_candidate", lambda candidate, host: host)
    with pytest.raises(rtc_seam.SeamError) as error:
        rtc_seam.check()
    assert_loud(error, "validate_remote_candidate")


def test_the_three_libraries_are_pinned_to_the_installed_minor_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {r.name: r.specifier for r in map(Requirement, project["dependencies"]) if r.name in LIBRARIES}
    assert set(pins) == set(LIBRARIES)
    for name, specifier in pins.items():
        version = Version(installed(name))
        next_minor = Version(f"{version.major}.{version.minor + 1}")
        assert version in specifier and next_minor not in specifier, (name, str(specifier))
