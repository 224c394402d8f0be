"""Provider HTTP over plain asyncio streams: what httpx does over it is what it did over anyio
(bodies byte-exact, keep-alive, a closed idle connection replaced, timeouts and failures as
httpx's own errors, TLS with certificate checks)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from streaming_proxy import nethttp

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)


class Server:
    """A loopback HTTP/1.1 server whose handler writes raw bytes; counts connections."""

    def __init__(self, handler: Handler, context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.context = context
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.context else 'http'}://localhost:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return head + await reader.readexactly(length)


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> None:
    """Read one request and answer it with `raw`."""
    await read_request(reader)
    writer.write(raw)
    await writer.drain()


def answers_once(raw: bytes) -> Handler:
    """Answers one request with `raw`, then closes the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(reader, writer, raw)

    return handle


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


async def answer_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive: every request gets a chunked SSE body written in awkward pieces."""
    while True:
        await read_request(reader)
        body = chunked(b'data: {"a":', b' "\xc3', b'\xa9"}\n\n', b"data: [DONE]\n\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 7):  # bytes split mid-size-line, mid-character
            writer.write(body[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=nethttp.transport(LIMITS), timeout=2) as c:
        yield c


async def test_bodies_arrive_byte_exact_and_connections_are_kept_alive(
    client: httpx.AsyncClient,
) -> None:
    server = Server(answer_forever)
    async with server as origin:
        for _ in range(3):
            async with client.stream("POST", f"{origin}/v1/x", json={"q": 1}) as r:
                body = b"".join([part async for part in r.aiter_raw()])
            assert body == 'data: {"a": "é"}\n\ndata: [DONE]\n\n'.encode()
    assert server.connections == 1


async def test_an_idle_connection_the_server_closed_is_replaced_not_reused(
    client: httpx.AsyncClient,
) -> None:
    server = Server(answers_once(OK))  # then closes, as a keep-alive timeout on a server does
    async with server as origin:
        assert (await client.get(origin)).text == "ok"
        await asyncio.sleep(0.05)  # the close reaches the pooled connection
        assert (await client.get(origin)).text == "ok"
    assert server.connections == 2


async def test_a_silent_server_is_a_read_timeout(client: httpx.AsyncClient) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with Server(silent) as origin:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(origin, timeout=httpx.Timeout(2, read=0.1))


async def test_a_cut_body_and_a_refused_connection_are_httpx_errors(
    client: httpx.AsyncClient,
) -> None:
    cut = answers_once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
    async with Server(cut) as origin:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(origin)
    with pytest.raises(httpx.ConnectError):
        await client.get(origin)  # nothing listens there any more


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_is_verified_and_then_works_like_plain_http(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with Server(answer_forever, serving) as origin:
        async with httpx.AsyncClient(transport=nethttp.transport(LIMITS, trusting)) as good:
            r = await good.post(f"{origin}/v1/x", json={})
            assert r.text.endswith("data: [DONE]\n\n")
        async with httpx.AsyncClient(transport=nethttp.transport(LIMITS)) as strict:
            with pytest.raises(httpx.ConnectError):  # not signed by a public authority
                await strict.post(f"{origin}/v1/x", json={})


def openai_stream_handler(*, end_body: bool) -> Handler:
    """Answers each request with one text chunk and `[DONE]`; `end_body` False leaves the
    chunked body open after `[DONE]` (a server that never finishes it)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
            writer.write(b"transfer-encoding: chunked\r\n\r\n")
            for data in (
                b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}',
                b"data: [DONE]",
            ):
                writer.write(b"%x\r\n%s\n\n\r\n" % (len(data) + 2, data))
                await writer.drain()
                await asyncio.sleep(0.001)
            if not end_body:
                await asyncio.sleep(5)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    return handle


async def _stream_twice(origin: str) -> list[str]:
    from pydantic import SecretStr

    from streaming_proxy.providers.base import LlmRequest
    from streaming_proxy.providers.openai import OpenAIProvider

    texts = []
    async with httpx.AsyncClient(transport=nethttp.transport(LIMITS)) as http:
        provider = OpenAIProvider("openai", http, f"{origin}/v1", SecretStr("k"))
        for _ in range(2):
            request = LlmRequest(model="m", messages=[{"role": "user", "content": "x"}])
            events = [event async for event in provider.stream(request)]
            texts.append("".join(getattr(e, "text", "") for e in events))
    return texts


async def test_consecutive_provider_streams_share_one_kept_alive_connection() -> None:
    # The body's end after `[DONE]` is read, so the next stream skips a (TLS) handshake.
    server = Server(openai_stream_handler(end_body=True))
    async with server as origin:
        assert await _stream_twice(origin) == ["hi", "hi"]
    assert server.connections == 1


async def test_a_body_left_open_after_done_costs_a_connection_not_the_stream_end() -> None:
    server = Server(openai_stream_handler(end_body=False))
    async with server as origin:
        started = asyncio.get_running_loop().time()
        assert await _stream_twice(origin) == ["hi", "hi"]
        assert asyncio.get_running_loop().time() - started < 2  # not the server's 5 s each
    assert server.connections == 2


async def test_a_slow_steady_stream_is_not_a_read_timeout_but_a_stall_is() -> None:
    # The read timeout bounds each wait, not the body: 10 pieces 0.05 s apart pass a 0.2 s
    # limit; a stall of 0.5 s mid-body fails it.
    async def steady_then_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(10):
            writer.write(chunked(b"x")[:-5])  # one chunk, not the end
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)

    got = b""
    async with (
        Server(steady_then_stall) as origin,
        httpx.AsyncClient(transport=nethttp.transport(LIMITS)) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("GET", origin, timeout=httpx.Timeout(2, read=0.2)) as r:
                async for part in r.aiter_raw():
                    got += part
    assert got == b"x" * 10


async def test_a_body_closed_half_read_drops_its_connection() -> None:
    server = Server(answer_forever)
    async with (
        server as origin,
        httpx.AsyncClient(transport=nethttp.transport(LIMITS)) as client,
    ):
        async with client.stream("POST", origin, json={}) as r:
            async for _ in r.aiter_raw():
                break  # the rest of this body is never read
        assert (await client.post(origin, json={})).text.endswith("[DONE]\n\n")
    assert server.connections == 2


async def test_waiting_for_a_connection_is_bounded_by_the_pool_timeout() -> None:
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with (
        Server(answer_forever) as origin,
        httpx.AsyncClient(transport=nethttp.transport(one)) as client,
    ):
        async with client.stream("POST", origin, json={}):
            with pytest.raises(httpx.PoolTimeout):
                await client.post(origin, json={}, timeout=httpx.Timeout(2, pool=0.1))
        # the first answer closed: its connection serves the next request
        assert (await client.post(origin, json={})).status_code == 200


async def test_an_idle_connection_past_the_keepalive_expiry_is_not_reused() -> None:
    brief = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=0.05)
    server = Server(answer_forever)
    async with (
        server as origin,
        httpx.AsyncClient(transport=nethttp.transport(brief)) as client,
    ):
        await client.post(origin, json={})
        await client.post(origin, json={})  # at once: reused
        await asyncio.sleep(0.1)
        await client.post(origin, json={})  # expired: a new connection
    assert server.connections == 2


async def test_request_bodies_of_unknown_length_go_chunked_and_gzip_answers_decode() -> None:
    import gzip

    received: list[bytes] = []

    async def echo_gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received.append(head + await reader.readuntil(b"0\r\n\r\n"))
        body = gzip.compress(b"hello " * 100)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n")
        writer.write(b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cde"

    async with (
        Server(echo_gzipped) as origin,
        httpx.AsyncClient(transport=nethttp.transport(LIMITS)) as client,
    ):
        r = await client.post(f"{origin}/up?q=1", content=parts())
    assert r.text == "hello " * 100
    head, _, body = received[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /up?q=1 HTTP/1.1\r\n")
    assert b"\r\nTransfer-Encoding: chunked" in head
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"


async def test_a_malformed_answer_is_a_remote_protocol_error(client: httpx.AsyncClient) -> None:
    async with Server(answers_once(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")) as origin:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(origin)


async def test_a_url_that_is_not_http_is_refused(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.get("ftp://127.0.0.1/x")


async def test_a_shorter_read_timeout_on_a_reused_connection_still_applies(
    client: httpx.AsyncClient,
) -> None:
    async def fast_then_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(reader, writer, OK)
        await read_request(reader)
        await asyncio.sleep(5)

    async with Server(fast_then_silent) as origin:
        await client.get(origin, timeout=httpx.Timeout(2, read=30))  # leaves a 30 s timer
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await client.get(origin, timeout=httpx.Timeout(2, read=0.1))
        assert asyncio.get_running_loop().time() - started < 1


async def test_idle_connections_beyond_the_keepalive_limit_are_closed() -> None:
    one_idle = httpx.Limits(max_connections=4, max_keepalive_connections=1)
    server = Server(answer_forever)

    async def two_at_once(client: httpx.AsyncClient, origin: str) -> None:
        async with (
            client.stream("POST", origin, json={}) as a,
            client.stream("POST", origin, json={}) as b,
        ):
            await a.aread()
            await b.aread()

    async with (
        server as origin,
        httpx.AsyncClient(transport=nethttp.transport(one_idle)) as client,
    ):
        await two_at_once(client, origin)  # two connections; one stays idle
        await two_at_once(client, origin)  # the idle one, and a new one
    assert server.connections == 3


async def test_over_the_keepalive_limit_the_connection_idle_longest_makes_way() -> None:
    # One idle connection in all: an origin asked for once must not keep it from another
    # origin that is asked for again and again (each would pay a new handshake).
    one_idle = httpx.Limits(max_connections=4, max_keepalive_connections=1)
    once, often = Server(answer_forever), Server(answer_forever)
    async with (
        once as first,
        often as second,
        httpx.AsyncClient(transport=nethttp.transport(one_idle)) as client,
    ):
        await client.post(first, json={})
        for _ in range(3):
            await client.post(second, json={})
        await client.post(first, json={})  # its idle connection was the one closed
    assert (once.connections, often.connections) == (2, 1)
