"""The proxy's asyncio server: read each request whole, let the rules decide, relay or misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from .faults import Forward
from .rules import RuleBook
from .traffic import Exchange, TrafficLog
from .wire import (
    Body,
    Framing,
    Head,
    Request,
    WireError,
    encode_cut,
    encode_end,
    encode_piece,
    iter_body,
    read_head,
    read_request,
    read_response_head,
    response_body,
)

HEAD_LIMIT = 64 * 1024
# How long stop() waits for connection tasks after cancelling them.
STOP_GRACE = 1.0
FORWARD = Forward()


@dataclass(frozen=True)
class Target:
    """The target's address; `base_path` is kept so the proxy's base URL can mirror it."""

    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"ChaosProxy relays plain http:// targets, not {url!r}")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"))


class ClientReader(asyncio.StreamReader):
    """Says when the client has gone without anyone reading: a relay waiting on a quiet SSE
    upstream must still notice a client that hung up, and hang up on the target in turn."""

    def __init__(self) -> None:
        super().__init__(limit=HEAD_LIMIT)
        self.gone = asyncio.Event()

    def feed_eof(self) -> None:
        super().feed_eof()
        self.gone.set()

    def set_exception(self, exc: Exception) -> None:
        super().set_exception(exc)
        self.gone.set()


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    if data:
        writer.write(data)
        await writer.drain()


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """End the connection with a TCP RST: with SO_LINGER 0, closing drops it instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _cut_point(cut_after: int | None, body: Body) -> int | None:
    """How many body bytes go out before a cut. Past the end of a fixed-length body it moves
    to before the last byte: a cut that fired always breaks the response, instead of
    dropping the connection after a whole one and racing the client's next request."""
    if cut_after is not None and body.framing is Framing.LENGTH:
        return min(cut_after, max(body.length - 1, 0))
    return cut_after


class RelayCall:
    """One request between client and target; the `Call` an action acts through."""

    def __init__(
        self,
        target: Target,
        request: Request,
        exchange: Exchange,
        reader: ClientReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._target = target
        self._request = request
        self._exchange = exchange
        self._reader = reader
        self._writer = writer

    async def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> bool:
        keep_alive = self._request.keep_alive
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        if not keep_alive:
            lines.append("Connection: close")
        payload = b"" if self._request.method == "HEAD" else body
        self._exchange.status = status
        await send(self._writer, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        return keep_alive

    async def client_gone(self) -> None:
        await self._reader.gone.wait()

    async def pause(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._reader.gone.wait(), seconds)
        except TimeoutError:
            return True
        self._exchange.forwarded = False
        return False

    def reset(self) -> bool:
        reset_connection(self._writer)
        return False

    async def forward(self, *, cut_after: int | None = None, reset: bool = True) -> bool:
        relay = asyncio.ensure_future(self._relay(cut_after, reset))
        gone = asyncio.ensure_future(self._reader.gone.wait())
        try:
            await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not relay.done():
                # The client left first: stop relaying, which closes the target connection.
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
        return relay.result() if not relay.cancelled() else False

    async def _relay(self, cut_after: int | None, reset: bool) -> bool:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self._target.host, self._target.port, limit=HEAD_LIMIT
            )
        except OSError as e:
            self._exchange.forwarded = False
            body = f"ChaosProxy: target unreachable: {e}".encode()
            return await self.answer(502, {"Content-Type": "text/plain"}, body)
        try:
            await send(up_writer, self._request.encoded())
            return await self._relay_response(up_reader, cut_after, reset)
        finally:
            # One target connection per request: the client's keep-alive is the proxy's own,
            # so a target closing an idle connection can never race a client's next request.
            up_writer.close()

    async def _relay_response(
        self, up_reader: asyncio.StreamReader, cut_after: int | None, reset: bool
    ) -> bool:
        answer = await read_response_head(up_reader)
        if answer is None:
            return False  # the target hung up without answering: so does the proxy
        head, status = answer
        self._exchange.status = status
        body = response_body(head, status, self._request.method)
        await send(self._writer, head.raw)
        cut = _cut_point(cut_after, body)
        if cut == 0:
            return self._cut(reset)
        sent = 0
        async with aclosing(iter_body(up_reader, body)) as pieces:
            async for piece in pieces:
                if cut is not None and sent + len(piece) >= cut:
                    await send(self._writer, encode_cut(body.framing, piece, cut - sent))
                    return self._cut(reset)
                await send(self._writer, encode_piece(body.framing, piece))
                sent += len(piece)
        if cut is not None:
            # A chunked body shorter than the cut: all of it went out, but not its end.
            return self._cut(reset)
        await send(self._writer, encode_end(body.framing))
        return self._keeps_alive(head, body.framing)

    def _keeps_alive(self, head: Head, framing: Framing) -> bool:
        return (
            self._request.keep_alive
            and not head.has_token("connection", "close")
            and framing is not Framing.UNTIL_CLOSE
        )

    def _cut(self, reset: bool) -> bool:
        # send() drained to the kernel, so on loopback the bytes are already with the client.
        if reset:
            reset_connection(self._writer)
        else:
            self._writer.close()
        return False


class ProxyServer:
    """Accepts connections and serves their requests one after another (keep-alive)."""

    def __init__(self, target: Target, rules: RuleBook, log: TrafficLog) -> None:
        self._target = target
        self._rules = rules
        self._log = log
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        """Stop listening and end every connection, hung ones included."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE)

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        reader = ClientReader()

        def connected(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # A task of our own rather than the protocol's: close() cancels it, and Python
            # 3.11's protocol callback logs a spurious error for a cancelled one.
            task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
            self._connections[task] = writer
            task.add_done_callback(lambda done: self._connections.pop(done, None))

        return asyncio.StreamReaderProtocol(reader, connected)

    async def _serve(self, reader: ClientReader, writer: asyncio.StreamWriter) -> None:
        self._log.connection()
        # drain() then waits until every byte is in the kernel: nothing is held back here
        # (SSE flows chunk by chunk) and a cut after n bytes is exact.
        writer.transport.set_write_buffer_limits(high=0)
        try:
            if self._rules.pick(None) is not None:
                reset_connection(writer)
                return
            while await self._serve_one(reader, writer):
                pass
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, WireError):
            # A peer broke off mid-message or spoke nonsense: end the connection, as a dead
            # target would have.
            writer.transport.abort()

    async def _serve_one(self, reader: ClientReader, writer: asyncio.StreamWriter) -> bool:
        head = await read_head(reader)
        if head is None:
            return False
        if head.has_token("expect", "100-continue"):
            # Rules decide on the whole request, so the client has to send its body first.
            await send(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
        request = await read_request(reader, head)
        rule = self._rules.pick(request)
        exchange = self._log.record(request, rule)
        action = rule.action if rule is not None else FORWARD
        call = RelayCall(self._target, request, exchange, reader, writer)
        return await action.apply(call)
