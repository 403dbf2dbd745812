"""RTSPS (RTSP over TLS, `rtsps://`, default port 322): the TLS context for a camera and its certificate check.

Cameras rarely hold a certificate a public CA signed, so a camera may be pinned instead: `tls_sha256=<hex>` in
its registry URL's query (colons allowed, as `openssl x509 -fingerprint -sha256` prints it) accepts exactly the
certificate with that SHA-256 fingerprint, whoever signed it. Without a pin the system's CAs and the host name
are verified. A TLS session is never read by the batch reader (it reads raw sockets): it costs an idle camera a
wake-up per packet, like a watched one.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl

from mediaserver.rtsp.errors import ErrorKind, RtspError

DEFAULT_PORT = 322


def normalise_fingerprint(value: str) -> str:
    fingerprint = value.replace(":", "").strip().lower()
    if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
        raise RtspError(ErrorKind.BAD_URL, "tls_sha256 must be a SHA-256 fingerprint (64 hex digits)")
    return fingerprint


def client_context(pinned: str | None) -> ssl.SSLContext:
    """Verify against the system's CAs, or (pinned) accept any chain and check the fingerprint after the handshake."""
    if pinned is None:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin below is the check
    return context


def check_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, pinned: str | None) -> None:
    if pinned is None:
        return
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise RtspError(ErrorKind.TLS, "the camera presented no certificate")
    got = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(got, pinned):
        raise RtspError(ErrorKind.TLS, f"certificate SHA-256 {got} is not the pinned {pinned}")
