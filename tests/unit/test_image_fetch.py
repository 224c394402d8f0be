"""The image fetcher's SSRF guard: which addresses it refuses, that it connects to the address
it checked (never resolving twice), and its redirect, type, size and time limits."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from streaming_proxy.errors import ImageUrlRefused
from streaming_proxy.providers.imagefetch import ImageFetcher, refusal

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PUBLIC = "93.184.216.34"
NAMES = {
    "images.example": [PUBLIC],
    "v6.example": ["2606:2800:220:1:248:1893:25c8:1946"],
    "internal.example": ["10.0.0.5"],
    "metadata.example": ["169.254.169.254"],
    # One public and one private answer: a rebinding attacker's favourite.
    "mixed.example": [PUBLIC, "192.168.1.20"],
}

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class Resolver:
    """A stub DNS: NAMES, and IP literals as themselves; it counts the lookups."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host in NAMES:
            return NAMES[host]
        ipaddress.ip_address(host)  # anything else does not resolve (ValueError)
        return [host]


def fetcher(
    handler: Handler | None = None,
    *,
    allow_private: bool = False,
    timeout: float = 2.0,
    max_bytes: int = 1024,
) -> tuple[ImageFetcher, Resolver, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = (handler or png)(request)
        return answer if isinstance(answer, httpx.Response) else await answer

    resolver = Resolver()
    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return (
        ImageFetcher(
            timeout_seconds=timeout,
            max_bytes=max_bytes,
            allow_private=allow_private,
            resolver=resolver,
            http=client,
        ),
        resolver,
        sent,
    )


def png(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "image/png"}, content=PNG)


async def refused(url: str, handler: Handler | None = None, *, limit: float = 2.0) -> str:
    fetch, _, _ = fetcher(handler, timeout=limit)
    with pytest.raises(ImageUrlRefused) as caught:
        await fetch.fetch(url)
    assert caught.value.status == 400 and caught.value.kind == "image_url_refused"
    assert url not in caught.value.message  # a signed URL may carry a secret
    return caught.value.message


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.0.10",
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "100.64.0.1",
        "168.63.129.16",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.1"])
def test_the_test_setting_admits_loopback_and_private(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_private=True) is None


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "fe80::1"]
)
def test_the_test_setting_never_admits_metadata_or_link_local(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_private=True) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/cat.png",
        "http://10.0.0.1/cat.png",
        "http://172.16.5.4/cat.png",
        "http://192.168.1.1/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/cat.png",
        "http://[fc00::1]/cat.png",
        "http://[::ffff:127.0.0.1]/cat.png",
        "http://0.0.0.0/cat.png",
    ],
)
async def test_urls_of_non_public_addresses_are_refused_without_a_request(url: str) -> None:
    fetch, _, sent = fetcher()
    with pytest.raises(ImageUrlRefused, match="resolves to"):
        await fetch.fetch(url)
    assert sent == []


@pytest.mark.parametrize(
    "url", ["http://localhost/cat.png", "http://2130706433/cat.png", "http://0x7f.1/cat.png"]
)
async def test_the_system_resolver_is_checked_too(url: str) -> None:
    sent: list[httpx.Request] = []
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: sent.append(r) or png(r)))
    fetch = ImageFetcher(timeout_seconds=2, max_bytes=1024, http=client)
    with pytest.raises(ImageUrlRefused, match="resolves to a loopback address"):
        await fetch.fetch(url)
    assert sent == []


@pytest.mark.parametrize("host", ["internal.example", "metadata.example", "mixed.example"])
async def test_a_name_resolving_to_any_private_address_is_refused(host: str) -> None:
    fetch, resolver, sent = fetcher()
    with pytest.raises(ImageUrlRefused, match="resolves to"):
        await fetch.fetch(f"https://{host}/cat.png")
    assert resolver.lookups == [host] and sent == []


async def test_the_request_goes_to_the_checked_address_with_the_name_kept() -> None:
    fetch, resolver, sent = fetcher()
    image = await fetch.fetch("https://images.example:8443/a/cat.png?size=2")
    assert (image.mime, image.data) == ("image/png", PNG)
    assert resolver.lookups == ["images.example"]  # resolved once, never again
    (request,) = sent
    assert str(request.url) == f"https://{PUBLIC}:8443/a/cat.png?size=2"
    assert request.headers["host"] == "images.example:8443"
    # TLS speaks and verifies the name, not the address.
    assert request.extensions["sni_hostname"] == "images.example"


async def test_ipv6_addresses_are_connected_to_in_brackets() -> None:
    fetch, _, sent = fetcher()
    await fetch.fetch("http://v6.example/cat.png")
    assert sent[0].url.host == "2606:2800:220:1:248:1893:25c8:1946"
    assert sent[0].headers["host"] == "v6.example"


def redirect_to(location: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/start":
            return httpx.Response(302, headers={"location": location})
        return png(request)

    return handler


@pytest.mark.parametrize(
    "location",
    [
        "http://internal.example/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/cat.png",
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(location: str) -> None:
    fetch, _, sent = fetcher(redirect_to(location))
    with pytest.raises(ImageUrlRefused, match="resolves to"):
        await fetch.fetch("https://images.example/start")
    assert len(sent) == 1  # the first hop only


async def test_a_redirect_to_a_public_address_is_followed_and_checked_again() -> None:
    fetch, resolver, sent = fetcher(redirect_to("https://v6.example/cat.png"))
    image = await fetch.fetch("https://images.example/start")
    assert image.data == PNG
    assert resolver.lookups == ["images.example", "v6.example"]
    assert sent[1].headers["host"] == "v6.example"


async def test_a_relative_redirect_stays_on_the_name() -> None:
    fetch, resolver, _ = fetcher(redirect_to("/cat.png"))
    assert (await fetch.fetch("https://images.example/start")).data == PNG
    assert resolver.lookups == ["images.example", "images.example"]


async def test_more_than_three_redirects_are_refused() -> None:
    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"location": "/again"})

    message = await refused("https://images.example/start", loop)
    assert "more than 3" in message


@pytest.mark.parametrize(
    "url", ["ftp://images.example/cat.png", "file:///etc/passwd", "gopher://images.example/"]
)
async def test_only_http_and_https_are_fetched(url: str) -> None:
    assert "http(s)" in await refused(url)


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    assert "does not resolve" in await refused("https://nowhere.example/cat.png")


@pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/json", ""])
async def test_only_png_jpeg_gif_and_webp_are_taken(content_type: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=b"<svg/>")

    assert "not a png, jpeg, gif or webp image" in await refused(
        "https://images.example/x", handler
    )


async def test_an_error_status_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, headers={"content-type": "image/png"})

    assert "HTTP 404" in await refused("https://images.example/x", handler)


async def test_an_oversized_body_is_refused_while_it_streams() -> None:
    chunks: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            chunks.append(1)
            yield b"\x00" * 512

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "image/png"}, content=body())

    assert "larger than 1024 bytes" in await refused("https://images.example/x", handler)
    assert len(chunks) < 10  # stopped reading, never buffered the whole body


async def test_a_compressed_image_is_refused_and_never_inflated() -> None:
    """httpx inflates a network chunk whole: 10 KB of gzip from the caller's URL would be
    10 MB in memory before the size cap looked. A plain answer is asked for; any other is
    refused."""
    bomb = gzip.compress(b"\x00" * 10_000_000)
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding", ""))
        headers = {"content-type": "image/png", "content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, content=bomb)

    assert "compressed (gzip)" in await refused("https://images.example/x", handler)
    assert asked == ["identity"]


def test_the_fetchers_own_client_keeps_no_cookie() -> None:
    """One app's image host setting a cookie must not see it come back with another app's
    fetch (the client is the process's)."""
    client = ImageFetcher(timeout_seconds=1, max_bytes=1024)._http
    request = httpx.Request("GET", f"https://{PUBLIC}/x")
    client.cookies.extract_cookies(
        httpx.Response(200, headers={"set-cookie": "session=app-a; Path=/"}, request=request)
    )
    assert not client.cookies


async def test_a_declared_oversized_body_is_refused_unread() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "image/png", "content-length": "999999"}, content=b""
        )

    assert "larger than" in await refused("https://images.example/x", handler)


async def test_a_slow_image_times_out() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return png(request)

    message = await refused("https://images.example/x", slow, limit=0.2)
    assert "timed out after 0.2 s" in message


async def test_transport_failures_are_refusals() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    assert "could not be fetched (ConnectError)" in await refused(
        "https://images.example/x", broken
    )


def self_signed(name: str) -> tuple[bytes, bytes]:
    """A certificate for `name` and its key (PEM), made for this test run."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
async def tls_image_server(tmp_path: Path) -> AsyncIterator[tuple[int, bytes]]:
    """An HTTPS server on loopback for `images.test` answering every GET with PNG."""
    cert, key = self_signed("images.test")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {len(PNG)}"
            writer.write(head.encode() + b"\r\nconnection: close\r\n\r\n" + PNG)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the refused client hangs up during the handshake
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1], cert


async def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def test_the_client_is_made_on_the_first_url_and_verifies_with_the_given_trust(
    tls_image_server: tuple[int, bytes],
) -> None:
    port, cert = tls_image_server
    trusting = ssl.create_default_context(cadata=cert.decode())
    url = f"https://images.test:{port}/cat.png"
    fetch = ImageFetcher(
        timeout_seconds=5, max_bytes=1024, allow_private=True, resolver=loopback, tls=trusting
    )
    assert fetch._client is None  # nothing made (nor imported) before an image URL
    image = await fetch.fetch(url)
    assert (image.mime, image.data) == ("image/png", PNG)
    await fetch.aclose()

    default_trust = ImageFetcher(
        timeout_seconds=5, max_bytes=1024, allow_private=True, resolver=loopback
    )
    with pytest.raises(ImageUrlRefused, match="could not be fetched"):
        await default_trust.fetch(url)
    await default_trust.aclose()


async def test_a_fetcher_that_fetched_nothing_closes_without_making_a_client() -> None:
    fetch = ImageFetcher(timeout_seconds=1, max_bytes=1024)
    await fetch.aclose()
    assert fetch._client is None
