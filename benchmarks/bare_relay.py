"""A bare relay: the floor under the SSE overhead benchmark's proxied rows, in a process of its own.

`python -m benchmarks.bare_relay PORT UPSTREAM_PORT` serves `POST /v1/chat/completions` on
the server the stack's app runs on (uvicorn on uvloop, httptools parsing HTTP, an ASGI
app): the request body goes to the stamped upstream as it is, and each read of the
upstream's chunked answer goes back to the caller as one ASGI body message, its bytes
untouched. It parses no SSE and no JSON, checks nothing, counts nothing, keeps no pool:
what moving a chunk from the upstream's socket to the caller's costs this stack before any
of the proxy's work, so the proxy's CPU per chunk can be read against it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import uvicorn

from devstack.process import cpu_seconds, free_port

from .children import spawn_server, stop_server
from .sse_client import Dechunker

_HEAD_END = b"\r\n\r\n"


async def _body(receive: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def relay_app(upstream_port: int) -> Any:
    """The ASGI app: one upstream connection per request, closed after its answer."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if (scope["method"], scope["path"]) != ("POST", "/v1/chat/completions"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = await _body(receive)
        reader, writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: upstream\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = await reader.readuntil(_HEAD_END)
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"the upstream answered {head[:200]!r}")
        start = {"type": "http.response.start", "status": 200}
        await send({**start, "headers": [(b"content-type", b"text/event-stream")]})
        chunks = Dechunker()
        while not chunks.done and (data := await reader.read(65536)):
            if ready := chunks.feed(data):
                await send({"type": "http.response.body", "body": ready, "more_body": True})
        writer.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


@dataclass
class BareRelayProcess:
    """The parent's handle: where the relay listens, its CPU, and stopping it."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    @classmethod
    def start(cls, upstream_port: int) -> BareRelayProcess:
        port = free_port()
        proc = spawn_server("benchmarks.bare_relay", port, str(upstream_port), probe="/")
        return cls(proc, port)

    def stop(self) -> None:
        stop_server(self.proc)


if __name__ == "__main__":
    uvicorn.run(
        relay_app(int(sys.argv[2])),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
