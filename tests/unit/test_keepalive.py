"""SignedPoster's connections, seen from a real server: kept alive, bounded, never reused once
unsound, closed by `aclose`; TLS verified against `AWS_CA_BUNDLE`, host names checked."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streaming_proxy.channels.keepalive import tls_context
from streaming_proxy.channels.signed_poster import SignedPoster
from streaming_proxy.channels.sigv4 import Credentials
from streaming_proxy.errors import DeliveryUnreachable
from tests.unit.loopback import OK, Loopback, Reply

KEY = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def poster_for(url: str, **options: Any) -> SignedPoster:
    return SignedPoster(url, "us-east-1", credentials=lambda: KEY, **options)


async def test_connections_are_kept_alive_across_posts() -> None:
    server = Loopback()
    async with server.serving() as url:
        poster = poster_for(url)
        for n in range(20):
            await poster.post("c", f"message {n}".encode())
        assert poster.connections == 1
        await poster.aclose()
    assert server.connections == 1
    assert [r.body for r in server.requests] == [f"message {n}".encode() for n in range(20)]


async def test_a_connection_the_server_closed_between_posts_is_not_reused() -> None:
    server = Loopback()
    async with server.serving() as url:
        poster = poster_for(url)
        await poster.post("c", b"1")
        await server.close_idle_connections()
        await poster.post("c", b"2")  # on a new connection, without an error
        await poster.aclose()
    assert [(r.body, r.connection) for r in server.requests] == [(b"1", 1), (b"2", 2)]


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(
            Reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
            id="connection-close",
        ),
        pytest.param(Reply(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"), id="http-1.0"),
        pytest.param(Reply(OK + b"HTTP/1.1 200 OK\r\n"), id="bytes-beyond-the-answer"),
        pytest.param(Reply(b"HTTP/1.1 200 OK\r\n\r\n", then="close"), id="body-to-the-close"),
    ],
)
async def test_a_connection_the_answer_ends_is_not_reused(first: Reply) -> None:
    server = Loopback([first])
    async with server.serving() as url:
        poster = poster_for(url)
        await poster.post("c", b"1")
        await poster.post("c", b"2")
        await poster.aclose()
    assert [r.connection for r in server.requests] == [1, 2]


async def test_bytes_nobody_asked_for_drop_an_idle_connection() -> None:
    server = Loopback()
    async with server.serving() as url:
        poster = poster_for(url)
        await poster.post("c", b"1")
        server.writers[0].write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        await asyncio.sleep(0.05)
        assert poster.connections == 0
        await poster.post("c", b"2")
        await poster.aclose()
    assert [r.connection for r in server.requests] == [1, 2]


@pytest.mark.parametrize(
    "failure", [Reply(hold=5), Reply(b"", then="reset")], ids=["timed-out", "reset"]
)
async def test_a_connection_that_failed_is_replaced(failure: Reply) -> None:
    server = Loopback([failure])
    async with server.serving() as url:
        poster = poster_for(url, timeout=0.6)
        with pytest.raises(DeliveryUnreachable):
            await poster.post("c", b"1")
        await poster.post("c", b"2")
        await poster.aclose()
    assert [r.connection for r in server.requests] == [1, 2]


async def test_a_cancelled_post_drops_its_connection() -> None:
    """Its answer may still arrive: it must not be read as the answer to the next post."""
    server = Loopback([Reply(hold=0.3)])
    async with server.serving() as url:
        poster = poster_for(url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await poster.post("c", b"1")
        await poster.post("c", b"2")
        await poster.aclose()
    assert [r.connection for r in server.requests] == [1, 2]


async def test_the_pool_bounds_connections_and_posts_in_flight() -> None:
    server = Loopback(default=Reply(hold=0.05))
    async with server.serving() as url:
        poster = poster_for(url, max_connections=2)
        await asyncio.gather(*(poster.post("c", str(n).encode()) for n in range(8)))
        await poster.aclose()
    assert (server.connections, server.most_in_flight, len(server.requests)) == (2, 2, 8)
    assert sorted(r.body for r in server.requests) == [str(n).encode() for n in range(8)]


async def test_aclose_closes_idle_connections_and_fails_posts_in_flight() -> None:
    server = Loopback([Reply(hold=0.05), Reply(hold=0.05), Reply(hold=5)])
    async with server.serving() as url:
        poster = poster_for(url, max_connections=4)
        await asyncio.gather(poster.post("c", b"1"), poster.post("c", b"2"))  # two connections
        slow = asyncio.create_task(poster.post("c", b"in flight"))  # on one of them
        await asyncio.sleep(0.05)
        await poster.aclose()
        with pytest.raises(DeliveryUnreachable):
            await slow
        with pytest.raises(DeliveryUnreachable, match="ConnectionAbortedError"):
            await poster.post("c", b"after close")
        await asyncio.sleep(0.05)
        assert poster.connections == 0
        idle = 3 - server.requests[-1].connection  # the connection the slow post did not take
        assert server.writers[idle - 1].is_closing()  # the server read the close
    assert server.connections == 2


# --- TLS --------------------------------------------------------------------------------------


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    names: list[x509.GeneralName] | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(
            issuer.subject
            if issuer
            else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        )
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A throwaway CA, a server certificate for 127.0.0.1 and one for another host name."""
    tmp = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", ca_key, None, ca_key, None)
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, san in {
        "right": x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        "wrong": x509.DNSName("other.example"),
    }.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, key, ca, ca_key, [san])
        (tmp / f"{name}.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    yield {name: tmp / f"{name}.pem" for name in ("ca", "right", "wrong")}


def server_tls(chain: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain)
    return context


async def test_https_posts_verify_against_aws_ca_bundle_and_keep_alive(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki["ca"]))
    server = Loopback(tls=server_tls(pki["right"]))
    async with server.serving() as url:
        assert url.startswith("https://")
        poster = poster_for(url)
        for n in range(3):
            await poster.post("c", str(n).encode())
        await poster.aclose()
    assert (server.connections, [r.body for r in server.requests]) == (1, [b"0", b"1", b"2"])


@pytest.mark.parametrize(
    ("certificate", "trusted"),
    [("right", False), ("wrong", True)],
    ids=["untrusted-issuer", "another-host-name"],
)
async def test_a_certificate_that_does_not_verify_is_unreachable(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch, certificate: str, trusted: bool
) -> None:
    if trusted:
        monkeypatch.setenv("AWS_CA_BUNDLE", str(pki["ca"]))
    else:
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # the system's CAs only
    server = Loopback(tls=server_tls(pki[certificate]))
    async with server.serving() as url:
        poster = poster_for(url)
        with pytest.raises(DeliveryUnreachable, match="SSLCertVerificationError"):
            await poster.post("c", b"x")
        await poster.aclose()
    assert server.requests == []


def test_the_tls_context_checks_host_names_and_trusts_aws_ca_bundle(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki["ca"]))
    context = tls_context()
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]
