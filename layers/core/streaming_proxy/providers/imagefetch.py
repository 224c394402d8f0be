"""ImageFetcher: one image URL fetched behind an SSRF guard.

The guard resolves the host once, refuses the URL if ANY address it resolves to is private,
loopback, link-local, unique-local, multicast, reserved, unspecified or a cloud metadata
address, then connects to the checked address itself (the URL's host is replaced by it; the
Host header and TLS SNI keep the name, so the certificate is verified for the name): a second
resolution, which DNS rebinding would answer differently, never happens. Redirects are
followed by hand, each one checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from ..errors import ImageUrlRefused
from ..native import IMAGE_TYPES
from ..nethttp import PLAIN, compression, cookieless

MAX_REDIRECTS = 3
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> every address the name resolves to.
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Instance metadata and platform services: refused even where private addresses are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack instance metadata
        "169.254.170.2",  # ECS task metadata and credentials
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ACCEPT = ", ".join(sorted(IMAGE_TYPES))


@dataclass(frozen=True, slots=True)
class FetchedImage:
    mime: str
    data: bytes


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the event loop's getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def refusal(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why the guard will not connect to `address`, or None when it may.

    `allow_private` (ALLOW_PRIVATE_IMAGE_URLS, local tests) admits loopback and private
    addresses; link-local, metadata, multicast, reserved and unspecified stay refused.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped, allow_private=allow_private)
    embedded = _embedded_ipv4(address)
    if embedded is not None and refusal(embedded, allow_private=allow_private):
        return "an address that embeds a refused IPv4 address"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for kind in ("link_local", "multicast", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if address.is_loopback:  # before "reserved": ::1 lies in the reserved ::/8
        return None if allow_private else "a loopback address"
    if address.is_reserved:
        return "a reserved address"
    if allow_private:
        return None
    if address.is_private or not address.is_global:
        return "a private or non-public address"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a 6to4, Teredo or NAT64 IPv6 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class ImageFetcher:
    """GETs image URLs for the providers that take only bytes (see images.py)."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        max_bytes: int,
        allow_private: bool = False,
        resolver: Resolver = system_resolver,
        http: httpx.AsyncClient | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes
        self._allow_private = allow_private
        self._resolve = resolver
        self._tls = tls
        self._client = http

    @property
    def _http(self) -> httpx.AsyncClient:
        """Made on the first image URL, not at start: few streams fetch one, and this client
        imports httpcore and h11 (~20 ms of a cold start). It shares the provider client's
        TLS context when given one (loading a trust store costs ~17 ms)."""
        if self._client is None:
            # No proxies from the environment (a proxy would resolve the name again), and no
            # kept connections: one verified for one name must not carry another's request.
            self._client = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                timeout=self._timeout,
                limits=httpx.Limits(max_keepalive_connections=0),
                verify=self._tls or True,
                cookies=cookieless(),  # a host's cookie is no other app's business
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def fetch(self, url: str) -> FetchedImage:
        """The image at `url`; ImageUrlRefused (400) saying why not, never quoting the URL."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._follow(httpx.URL(url))
        except TimeoutError as e:
            raise ImageUrlRefused(f"the image URL timed out after {self._timeout:g} s") from e
        except httpx.HTTPError as e:
            raise ImageUrlRefused(f"the image URL could not be fetched ({type(e).__name__})") from e

    async def _follow(self, url: httpx.URL) -> FetchedImage:
        for _ in range(MAX_REDIRECTS + 1):
            request = await self._pinned_request(url)
            response = await self._http.send(request, stream=True)
            try:
                if not response.is_redirect:
                    return await self._image(response)
                location = response.headers.get("location", "")
            finally:
                await response.aclose()
            url = url.join(location)
        raise ImageUrlRefused(f"the image URL redirected more than {MAX_REDIRECTS} times")

    async def _pinned_request(self, url: httpx.URL) -> httpx.Request:
        """A GET of `url` sent to its checked address, with the name kept for Host and SNI."""
        if url.scheme not in ("http", "https") or not url.host:
            raise ImageUrlRefused("image URLs must be http(s) URLs")
        host = url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and SNI take it
        port = url.port or (443 if url.scheme == "https" else 80)
        address = await self._checked_address(host, port)
        named = url.scheme == "https" and not _is_ip(host)
        return self._http.build_request(
            "GET",
            url.copy_with(host=str(address)),
            headers={"Host": url.netloc.decode("ascii"), "Accept": _ACCEPT, **PLAIN},
            extensions={"sni_hostname": host} if named else {},
        )

    async def _checked_address(self, host: str, port: int) -> IPAddress:
        try:
            found = [ipaddress.ip_address(a.split("%")[0]) for a in await self._resolve(host, port)]
        except (OSError, ValueError) as e:
            raise ImageUrlRefused("the image URL's host does not resolve") from e
        if not found:
            raise ImageUrlRefused("the image URL's host does not resolve")
        for address in found:
            reason = refusal(address, allow_private=self._allow_private)
            if reason is not None:
                raise ImageUrlRefused(f"the image URL's host resolves to {reason}")
        return found[0]

    async def _image(self, response: httpx.Response) -> FetchedImage:
        if not response.is_success:
            raise ImageUrlRefused(f"the image URL answered HTTP {response.status_code}")
        mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if mime not in IMAGE_TYPES:
            raise ImageUrlRefused(
                f"the image URL is not a png, jpeg, gif or webp image ({mime or 'no type'})"
            )
        encoding = compression(response)  # never inflated (nethttp.PLAIN)
        if encoding is not None:
            raise ImageUrlRefused(f"the image URL answered compressed ({encoding}); send it plain")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise self._too_large()
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > self._max_bytes:
                raise self._too_large()
        return FetchedImage(mime, bytes(data))

    def _too_large(self) -> ImageUrlRefused:
        return ImageUrlRefused(f"the image is larger than {self._max_bytes} bytes")
