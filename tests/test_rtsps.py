"""RTSPS (issue 15 item 14): a camera reached over TLS, with its certificate pinned by SHA-256 fingerprint.

The camera is gst-rtsp-server behind a TLS terminator on 127.0.0.1 (a thread: TLS in, the simulated camera's
plain RTSP out), with a self-signed certificate made for the test."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_ingest import wait_for

from mediaserver.hub import Hub
from mediaserver.ingest import CameraIngest, State
from mediaserver.rtsp.batch_reader import BatchReader
from mediaserver.rtsp.client import Source, Timeouts
from mediaserver.rtsp.errors import ErrorKind
from mediaserver.rtsp.reconnect import Backoff, RateLimiter

FAST = Timeouts(connect=3, response=3, stall=3, first_keyframe=6)


def self_signed(directory: Path) -> tuple[Path, Path, str]:
    """(certificate, key, the certificate's SHA-256 fingerprint as hex)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "camera.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "camera.pem", directory / "camera.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass
class TlsCamera:
    url: str  # rtsps://127.0.0.1:PORT/path
    fingerprint: str
    connections: list[int]


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def tls_camera(h264_camera: str, tmp_path: Path) -> Iterator[TlsCamera]:
    cert, key, fingerprint = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    plain = urlsplit(h264_camera)
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def serve(raw: socket.socket) -> None:
        try:
            tls = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # the client refused our certificate: expected in the refusal tests
            return
        upstream = socket.create_connection((plain.hostname, plain.port))
        back = threading.Thread(target=_pipe, args=(upstream, tls), daemon=True)
        back.start()
        _pipe(tls, upstream)
        back.join(5)
        tls.close()
        upstream.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            thread = threading.Thread(target=serve, args=(raw,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    port = listener.getsockname()[1]
    yield TlsCamera(f"rtsps://127.0.0.1:{port}{plain.path}", fingerprint, connections)
    stop.set()
    listener.close()
    acceptor.join(5)
    for thread in threads:
        thread.join(5)


def ingest(url: str, batch: BatchReader | None = None) -> CameraIngest:
    source = Source.of_camera(url, None, None)
    camera = CameraIngest(Hub("tls"), source, RateLimiter(100), FAST, Backoff(0.05, 0.2), batch=batch)
    camera.start()
    return camera


async def test_a_pinned_camera_streams_over_tls_and_is_never_batch_read(tls_camera: TlsCamera) -> None:
    """An idle camera over TLS stays on the event loop's reads: the batch reader reads raw sockets, ciphertext."""
    pin = ":".join(tls_camera.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()  # as openssl prints it
    batch = BatchReader(0.2)
    camera = ingest(f"{tls_camera.url}?tls_sha256={pin}", batch)
    try:
        await wait_for(lambda: camera.state == State.STREAMING and camera.hub.units >= 25, 15)
        assert len(batch) == 0
    finally:
        await camera.stop()
        await batch.close()
    assert camera.errors == {} and camera.connects == 1
    assert camera.client is None and camera.hub.keyframes >= 1


@pytest.mark.parametrize("pinned", [True, False], ids=["wrong-pin", "no-pin-self-signed"])
async def test_a_certificate_that_is_not_the_cameras_is_refused(tls_camera: TlsCamera, pinned: bool) -> None:
    query = f"?tls_sha256={'00' * 32}" if pinned else ""  # unpinned: the system CAs never signed this one
    camera = ingest(tls_camera.url + query)
    try:
        await wait_for(lambda: camera.errors[ErrorKind.TLS] >= 1, 10)
    finally:
        await camera.stop()
    assert camera.connects == 0 and camera.hub.units == 0
    assert ("not the pinned" if pinned else "self-signed certificate): pin it with tls_sha256") in camera.last_error, (
        camera.last_error
    )


async def test_a_bad_pin_is_a_bad_url() -> None:
    camera = ingest("rtsps://127.0.0.1:1/cam?tls_sha256=xyz")
    try:
        await wait_for(lambda: camera.errors[ErrorKind.BAD_URL] >= 1, 5)
    finally:
        await asyncio.wait_for(camera.stop(), 5)
    assert "64 hex digits" in camera.last_error
