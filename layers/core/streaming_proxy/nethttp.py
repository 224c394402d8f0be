"""Provider HTTP: a lean httpx transport, HTTP/1.1 on asyncio protocols, pooled per origin.

httpx's client (timeouts, redirects, headers, decoding, `httpx.HTTPError`s) over a
transport of our own instead of httpcore and h11. A provider stream reads once per chunk,
and httpcore's per-read layers (h11's event machinery, a stream read with a timeout
context per call, pool bookkeeping that visits every connection) cost more CPU than the
rest of a relayed chunk. Here a chunk is parsed in the protocol callback
(`http1stream.AnswerParser`) and costs the reading task one wake-up (`httpconn.py`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from .http1stream import ResponseHead
from .httpconn import Connection

__all__ = ["BODY", "PLAIN", "LeanTransport", "compression", "cookieless", "transport"]

Origin = tuple[str, str, int]  # scheme, host, port
# A response's extension holding its body as this transport reads it: an event stream reads
# it there, one generator layer fewer per chunk than through httpx's wrapper (which only
# times the response and closes this same body).
BODY = "streaming_proxy.body"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive: at most `limits.max_connections` open at once (waiting for
    one is bounded by the pool timeout); idle ones kept per origin, at most
    `max_keepalive_connections` in all (beyond that the one idle longest is closed), each
    for `keepalive_expiry` seconds."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext) -> None:
        self._limits = limits
        self._ssl = ssl_context
        self._slots = asyncio.Semaphore(limits.max_connections or 1_000_000)
        self._idle: dict[Origin, list[Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        await self._take_slot(timeouts.get("pool"))
        try:
            connection = self._idle_connection(origin) or await self._connect(
                origin, timeouts.get("connect")
            )
            head = await _exchange(connection, request, timeouts)
        except BaseException:
            self._slots.release()
            raise
        body = _Body(self, origin, connection, timeouts.get("read"))
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason, BODY: body},
        )

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.abort()
        self._idle.clear()

    def give_back(self, origin: Origin, connection: Connection) -> None:
        """A request is over: keep its connection for the next one if it can be trusted."""
        self._slots.release()
        if self._closed or not connection.reusable:
            connection.abort()
            return
        connection.release()
        self._idle.setdefault(origin, []).append(connection)
        keep = self._limits.max_keepalive_connections
        if keep is not None and sum(map(len, self._idle.values())) > keep:
            self._close_longest_idle()

    def _close_longest_idle(self) -> None:
        """Over the keep-alive limit: close the connection idle longest, whatever its origin
        (each origin's list is oldest first), so origins no longer asked for make way."""
        idle = min((c for c in self._idle.values() if c), key=lambda c: c[0].idle_since)
        idle.pop(0).abort()

    async def _take_slot(self, timeout: float | None) -> None:  # noqa: ASYNC109
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once: no timer needed
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError as e:
            raise httpx.PoolTimeout("no free connection in time") from e

    def _idle_connection(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        expiry = self._limits.keepalive_expiry
        now = asyncio.get_running_loop().time()
        # Most recently used first: the least likely to have been closed for idling.
        while idle:
            connection = idle.pop()
            fresh = expiry is None or now - connection.idle_since < expiry
            if fresh and connection.reusable:
                return connection
            connection.abort()
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> Connection:  # noqa: ASYNC109
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = scheme == "https"
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop),
                    host,
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as e:
            raise httpx.ConnectTimeout(f"no connection to {host} in time") from e
        except (OSError, ssl.SSLError) as e:  # refused, unreachable, DNS, certificate
            raise httpx.ConnectError(str(e) or type(e).__name__) from e
        return connection  # asyncio sets TCP_NODELAY itself


class _Body(httpx.AsyncByteStream):
    """An answer's body, piece by piece as it arrives; closing it frees the connection."""

    def __init__(
        self,
        pool: LeanTransport,
        origin: Origin,
        connection: Connection,
        read_timeout: float | None,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._connection = connection
        self._timeout = read_timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            data = connection.take()
            if data:
                yield data
            elif connection.body_done:
                return
            else:
                await connection.more(self._timeout)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._connection.body_done:  # read partly: its framing is lost
            self._connection.abort()
        self._pool.give_back(self._origin, self._connection)


async def _exchange(
    connection: Connection, request: httpx.Request, timeouts: dict[str, float | None]
) -> ResponseHead:
    """Write `request` on `connection`, wait for its answer's head; abort it on failure."""
    try:
        connection.begin(head_request=request.method == "HEAD")
        await _send(connection, request, timeouts.get("write"))
        return await connection.head(timeouts.get("read"))
    except BaseException:
        connection.abort()
        raise


async def _send(connection: Connection, request: httpx.Request, timeout: float | None) -> None:  # noqa: ASYNC109
    head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    head += [b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw]
    head.append(b"\r\n")
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream)  # an AsyncClient's request
    chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
    if not chunked:
        body = b"".join([part async for part in stream])
        await connection.write(b"".join(head) + body, timeout)
        return
    await connection.write(b"".join(head), timeout)
    async for part in stream:
        if part:
            await connection.write(b"%x\r\n%s\r\n" % (len(part), part), timeout)
    await connection.write(b"0\r\n\r\n", timeout)


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"the URL scheme {scheme!r} is not http or https")
    if not url.host:
        raise httpx.UnsupportedProtocol("the URL has no host")
    return scheme, url.host, url.port or _DEFAULT_PORTS[scheme]


def transport(limits: httpx.Limits, verify: ssl.SSLContext | bool = True) -> LeanTransport:
    """The provider transport; `verify` as httpx takes it (True: httpx's own trust store and
    TLS settings, which offer HTTP/1.1 only; an `SSLContext`: that one)."""
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
    return LeanTransport(limits, context)


def cookieless() -> CookieJar:
    """A cookie jar that keeps none (no domain is allowed to set one). The proxy's clients
    serve every app: a cookie one app's provider, webhook or image host set must never go
    with another app's request to the same host."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=()))


# Asked of an upstream whose answer is read under a size cap (tool webhooks, image URLs):
# httpx inflates each network chunk whole, so a few KB of gzip would be many MB in memory
# before the cap could look. An answer compressed all the same is refused (`compression`).
PLAIN = {"Accept-Encoding": "identity"}


def compression(response: httpx.Response) -> str | None:
    """The answer's content coding, None when it is sent as it is."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    return None if encoding in ("", "identity") else encoding
