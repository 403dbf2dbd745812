"""The Python parsers' fuzz findings (fuzz/registry.py targets), each pinned by an explicit case that failed before
its fix: huge JSON integers (float() overflows) and lone surrogates (SQLite cannot bind them) in incident bodies
and in a stolen key's token claims, a token that verified in more than one spelling, and numbers a camera writes
in other scripts' digits ("²", "٣": str.isdigit() accepts them, int() refuses or reads them) or past int()'s
4300-digit limit, which escaped the RTSP and SDP parsers as ValueError."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from helpers.access import until

from mediaserver.rtsp.errors import ErrorKind, RtspError
from mediaserver.rtsp.message import parse_message, parse_session
from mediaserver.rtsp.sdp import parse_sdp
from signaling.db import connect
from signaling.incidents import ValidationError, parse_create, parse_geometry
from signaling.keys import KeyStore
from signaling.tokens import TokenError, Tokens, TokenSettings

pytestmark = pytest.mark.e2e  # a CPU budget per target, not seconds

BASE = {"service": "112-video", "basis": "PIPA art. 25", "until": until(),
        "geometry": {"type": "Point", "coordinates": [126.978, 37.5665]}}  # fmt: skip
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"radius_m": 10**400}, "radius_m"),  # was OverflowError (math.isfinite of an int past float range): a 500
        ({"nearest": -(10**400)}, "nearest"),
        ({"geometry": {"type": "Point", "coordinates": [10**400, 37.5]}}, "geometry.coordinates"),
        ({"basis": "PIPA \ud800"}, "basis"),  # was accepted, then the INSERT failed (UnicodeEncodeError): a 500
        ({"summary": "\udfff"}, "summary"),
    ],
)
def test_incident_bodies_fuzzing_found_are_refused_by_field(patch: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_create({**BASE, **patch})
    assert err.value.field == field


def test_a_huge_integer_position_is_refused_and_a_big_exact_one_kept() -> None:
    with pytest.raises(ValidationError):
        parse_geometry({"type": "LineString", "coordinates": [[0, 0], [10**309, 0]]}, ("LineString",))
    assert parse_geometry({"type": "Point", "coordinates": [127, 37]}, ("Point",))["coordinates"] == [127.0, 37.0]


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Tokens, KeyStore, sqlite3.Connection]:
    db = connect(tmp_path / "gt.db")
    keys = KeyStore(db)
    return Tokens(db, keys, TokenSettings(leeway_s=0)), keys, db


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _respell_last(segment: str) -> str:
    """The same bytes, the unused low bits of the last character set: another base64url spelling."""
    spare = (6 - len(segment) * 6 % 8) % 6 if len(segment) % 4 else 0
    assert spare, "a segment without unused bits"
    return segment[:-1] + B64URL[B64URL.index(segment[-1]) | (1 << spare) - 1]


def test_a_token_verifies_in_one_spelling_only(tokens: tuple[Tokens, KeyStore, sqlite3.Connection]) -> None:
    """The fuzzer's `token` target: a real token with a segment's trailing bits changed decoded to the same bytes
    and verified (a second token string for the same grant, past any list of token strings)."""
    verifier = tokens[0]
    token, claims = verifier.issue("aud-a", "officer", "gt-1", "police-112", 60)
    assert verifier.verify(token, "aud-a")["jti"] == claims["jti"]
    segments = token.split(".")
    for i in range(3):
        if len(segments[i]) % 4 == 0:
            continue  # no unused bits in this segment (its length is a multiple of 4)
        respelled = segments.copy()
        respelled[i] = _respell_last(segments[i])
        assert base64.urlsafe_b64decode(respelled[i] + "==") == base64.urlsafe_b64decode(segments[i] + "==")
        with pytest.raises(TokenError, match=r"malformed|signature"):
            verifier.verify(".".join(respelled), "aud-a")


def _forge(keys: KeyStore, claims: dict[str, object]) -> str:
    key = keys.signing_key()
    signing_input = f"{_b64(json.dumps({'alg': 'ES256', 'kid': key.kid, 'typ': 'at+jwt'}).encode())}."
    signing_input += _b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.mark.parametrize(
    "patch",
    [
        {"exp": 10**400},  # was OverflowError from math.isfinite: a 500 instead of a 401
        {"iat": -(10**400)},
        {"jti": "\ud800"},  # was UnicodeEncodeError from the issue-record lookup
        {"sub": "officer \udc00"},
    ],
)
def test_a_stolen_keys_hostile_claims_are_a_token_error(
    tokens: tuple[Tokens, KeyStore, sqlite3.Connection], patch: dict[str, object]
) -> None:
    verifier, keys, _ = tokens
    _, claims = verifier.issue("aud-a", "officer", "gt-1", "police-112", 60)
    with pytest.raises(TokenError) as err:
        verifier.verify(_forge(keys, {**claims, **patch}), "aud-a")
    assert err.value.status == 401


@pytest.mark.parametrize(
    "raw",
    [
        "RTSP/1.0 200 OK\r\nCSeq: 1\r\nSession: 1234;timeout=²60\r\n\r\n",  # isdigit() but not int(): ValueError
        "RTSP/1.0 200 OK\r\nCSeq: 1\r\nSession: 1234;timeout=\x1f60\r\n\r\n",  # strip() takes \x1f, int() not (atheris)
        "RTSP/1.0 200 OK\r\nCSeq: 1\r\nSession: 1234;timeout=" + "9" * 5000 + "\r\n\r\n",  # past int()'s limit
    ],
)
def test_camera_numbers_in_other_scripts_are_rtsp_errors_or_ignored(raw: str) -> None:
    response = parse_message(raw.encode())
    if response is not None:
        assert parse_session(response.header("session"))[1] == 60  # a timeout we cannot read: the default


def test_a_bad_status_code_is_a_malformed_response() -> None:
    """Was ValueError: str.isdigit() is True for "²"."""
    with pytest.raises(RtspError) as err:
        parse_message("RTSP/1.0 ²²² OK\r\nCSeq: 1\r\n\r\n".encode())
    assert err.value.kind == ErrorKind.MALFORMED_RESPONSE


@pytest.mark.parametrize(
    ("sdp", "clock"),
    [
        ("m=video 0 RTP/AVP ²96\r\n", None),  # was ValueError from int()
        ("m=video 0 RTP/AVP " + "9" * 5000 + "\r\n", None),
        ("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/٩٠٠٠٠\r\n", 90000),  # Arabic-Indic digits: the default rate
        ("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/" + "9" * 5000 + "\r\n", 90000),
    ],
)
def test_sdp_numbers_in_other_scripts(sdp: str, clock: int | None) -> None:
    if clock is None:
        with pytest.raises(RtspError) as err:
            parse_sdp(sdp)
        assert err.value.kind == ErrorKind.MALFORMED_SDP
    else:
        assert parse_sdp(sdp).video().clock_rate == clock


def test_a_stolen_key_cannot_strip_a_tokens_single_use(tokens: tuple[Tokens, KeyStore, sqlite3.Connection]) -> None:
    """Access consumes a use only when the claim says single_use: true; a forger dropping it replayed the view. The
    verifier now holds the claim to the issue record (either way)."""
    verifier, keys, _ = tokens
    _, claims = verifier.issue("aud-a", "officer", "gt-1", "police-112", 60, single_use=True)
    assert verifier.verify(_forge(keys, claims), "aud-a")["single_use"] is True  # the key signs what we issued
    with pytest.raises(TokenError, match="issue record"):
        verifier.verify(_forge(keys, {k: v for k, v in claims.items() if k != "single_use"}), "aud-a")
    _, plain = verifier.issue("aud-a", "officer", "gt-1", "police-112", 60)
    with pytest.raises(TokenError, match="issue record"):
        verifier.verify(_forge(keys, {**plain, "single_use": True}), "aud-a")
