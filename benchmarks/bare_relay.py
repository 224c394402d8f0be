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
import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from devstack.process import ROOT, cpu_seconds, free_port

START_TIMEOUT_SECONDS = 20.0
_HEAD_END = b"\r\n\r\n"


class Dechunker:
    """HTTP/1.1 chunked transfer coding undone: the chunks' data, as bytes arrive."""

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The data of every chunk completed by `data` (b"" when none was)."""
        self._buffer += data
        out: list[bytes] = []
        while not self.done:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self._buffer[:line_end].split(b";", 1)[0], 16)
            start = line_end + 2
            if len(self._buffer) < start + size + 2:
                break
            out.append(self._buffer[start : start + size])
            self._buffer = self._buffer[start + size + 2 :]
            self.done = size == 0
        return b"".join(out)


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
        command = [sys.executable, "-m", "benchmarks.bare_relay", str(port), str(upstream_port)]
        relay = cls(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL), port)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and relay.proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                return relay
            time.sleep(0.05)
        relay.stop()
        raise RuntimeError("the bare relay did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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
