"""Provider HTTP on plain asyncio streams: httpx's client over an httpcore network backend.

httpx reaches sockets through httpcore's network backend, anyio by default. anyio's
per-read machinery (an event, a checkpoint, exception mapping layers) cost ~75 us of CPU
per read on a 2-core machine, more than everything else a relayed chunk costs: a provider
stream reads once per chunk. This backend (httpcore's documented `network_backend`
extension point) maps the same calls onto asyncio's streams and raises httpcore's own
exceptions, so httpx behaves exactly as before: same timeouts, same errors, same pooling.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["AsyncioBackend", "AsyncioStream", "transport"]

# httpcore passes each limit as seconds or None (no limit); its interface names the
# parameter `timeout`, hence the ASYNC109 exemptions below.
Timeout = float | None
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection: asyncio's reader and writer, errors as httpcore's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: Timeout = None) -> bytes:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as e:
            raise httpcore.ReadTimeout(str(e)) from e
        except OSError as e:  # reset, TLS failure
            raise httpcore.ReadError(str(e) or type(e).__name__) from e

    async def write(self, buffer: bytes, timeout: Timeout = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as e:
            raise httpcore.WriteTimeout(str(e)) from e
        except OSError as e:
            raise httpcore.WriteError(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        # No waiting for a TLS close_notify: the pool drops the connection either way.
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109
    ) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as e:
            self._writer.close()
            raise httpcore.ConnectTimeout(str(e)) from e
        except (OSError, ssl.SSLError) as e:  # certificate, handshake, reset
            self._writer.close()
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # An idle pooled connection that is readable was closed (or sent garbage): the
            # pool must not reuse it. asyncio reads eagerly, so that shows as EOF here.
            return self._reader.at_eof() or self._writer.is_closing()
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        return self._writer.get_extra_info(name)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens `AsyncioStream`s: TCP (optionally from a local address) and Unix sockets."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Timeout = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncioStream:
        local = (local_address, 0) if local_address else None
        stream = await self._open(asyncio.open_connection(host, port, local_addr=local), timeout)
        sock = stream.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: Timeout = None,  # noqa: ASYNC109
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncioStream:
        return await self._open(asyncio.open_unix_connection(path), timeout)

    async def _open(self, opening: Any, timeout: Timeout) -> AsyncioStream:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await opening
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(str(e)) from e
        except OSError as e:  # refused, unreachable, no such host
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        return AsyncioStream(reader, writer)  # asyncio sets TCP_NODELAY itself

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def transport(
    limits: httpx.Limits, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncHTTPTransport:
    """httpx's own transport (TLS settings, error mapping) on a pool using `AsyncioBackend`.

    httpx takes no network backend, so its pool is rebuilt with the same settings;
    tests/unit/test_nethttp.py fails if an httpx upgrade changes where the pool lives.
    """
    built = httpx.AsyncHTTPTransport(limits=limits, verify=verify)
    pool = built._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool):  # a proxy from the environment
        return built
    built._pool = httpcore.AsyncConnectionPool(
        ssl_context=pool._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return built
