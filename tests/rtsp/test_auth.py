import base64

import pytest

from mediaserver.rtsp.auth import Authenticator, parse_challenges
from mediaserver.rtsp.errors import ErrorKind, RtspError


def test_digest_matches_rfc2617_example() -> None:
    auth = Authenticator("Mufasa", "Circle Of Life", cnonce=lambda: "0a4f113b")
    auth.challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = auth.header("GET", "/dir/index.html")
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "nc=00000001" in header and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header
    assert "nc=00000002" in auth.header("GET", "/dir/index.html")


def test_digest_without_qop() -> None:
    auth = Authenticator("u", "p")
    auth.challenge('Digest realm="r", nonce="n"')
    assert "qop" not in auth.header("DESCRIBE", "rtsp://cam/")


def test_basic_and_digest_preference() -> None:
    auth = Authenticator("admin", "se:cret", allow_basic=True)
    auth.challenge('Basic realm="cam"')
    assert auth.header("DESCRIBE", "rtsp://cam/") == "Basic " + base64.b64encode(b"admin:se:cret").decode()
    both = Authenticator("a", "b")
    both.challenge('Basic realm="x"\nDigest realm="x", nonce="y"')
    assert both.header("OPTIONS", "rtsp://cam/").startswith("Digest ")


def test_unsupported_challenges() -> None:
    with pytest.raises(RtspError):
        Authenticator("a", "b").challenge("Bearer realm=x")
    with pytest.raises(RtspError):
        Authenticator("a", "b").challenge('Digest realm="x", nonce="y", algorithm=SHA-512-256')


def test_parse_challenges_quoted_commas() -> None:
    parsed = parse_challenges('Digest realm="a, b", nonce=abc')
    assert parsed["digest"] == {"realm": "a, b", "nonce": "abc"}


def test_basic_is_refused_unless_the_camera_allows_it() -> None:
    """Basic puts the password in clear on plain TCP (issue 15 item 14): a per-camera opt-in, else a clear kind."""
    with pytest.raises(RtspError) as refused:
        Authenticator("admin", "pw").challenge('Basic realm="cam"')
    assert refused.value.kind == ErrorKind.AUTH_BASIC_REFUSED and "allow_basic" in str(refused.value)
    both = Authenticator("a", "b")  # Digest offered too: taken, no refusal
    both.challenge('Basic realm="x"\nDigest realm="x", nonce="y"')
    assert both.header("OPTIONS", "rtsp://cam/").startswith("Digest ")
