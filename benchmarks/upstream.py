"""A fake OpenAI-format upstream whose chunks carry their own send time, in a process of its own.

`python -m benchmarks.upstream PORT` serves `POST /v1/chat/completions` (stream true): the
last message's content is a JSON `StampedRequest` (tag, chunks, delay); the answer is one
role chunk, then `chunks` `chat.completion.chunk` frames `delay_ms` apart whose
`delta.content` is `<i:ns> ` (chunk number, wall-clock send time in ns, taken just before
the write), a `stop` chunk, a usage chunk and `[DONE]`. `GET /sent/<tag>` answers exactly
the text a finished request sent, so delivery is checked against what really went out.
It runs on plain asyncio streams (no framework, no threads): in its own process its pacing
and stamps are not delayed by the benchmark's clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, Field

from devstack.process import free_port

from .children import spawn_server, stop_server

TOKEN = re.compile(r"<(\d+):(\d+)> ")
MODEL = "stamped"


class StampedRequest(BaseModel):
    """What a benchmark asks the upstream for, sent as the last message's content."""

    tag: str = Field(min_length=1, max_length=100)
    chunks: int = Field(ge=1, le=10_000)
    delay_ms: float = Field(ge=0, le=1000)

    def as_messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.model_dump_json()}]


def tokens(text: str) -> list[tuple[int, int]]:
    """The (chunk number, send time ns) of every stamped token in `text`, in order."""
    return [(int(i), int(ns)) for i, ns in TOKEN.findall(text)]


def latencies_ms(arrived_ns: int, text: str) -> list[float]:
    """How long each stamped token in `text` took to arrive at `arrived_ns` (one message
    may carry several tokens: each counts)."""
    return [(arrived_ns - sent) / 1e6 for _, sent in tokens(text)]


def _chunk(tag: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
    frame = {
        "id": f"chatcmpl-{tag}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": choices,
        **extra,
    }
    return b"data: " + json.dumps(frame).encode() + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class StampedUpstream:
    """The server: one coroutine per connection, HTTP/1.1 keep-alive, chunked answers."""

    def __init__(self) -> None:
        self.sent: dict[str, str] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: a request it cut short is never marked as sent
        except Exception:  # a bad request: say why on stderr, and close
            traceback.print_exc()
        writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length") or 0))
        if method == "POST" and path.endswith("/chat/completions"):
            await self._stream(json.loads(body), writer)
        elif method == "GET" and path.startswith("/sent/"):
            text = self.sent.get(path.removeprefix("/sent/"))
            if text is None:
                self._answer(writer, 404, {"error": "no finished request with that tag"})
            else:
                self._answer(writer, 200, {"text": text})
        else:
            self._answer(writer, 404, {"error": f"no route {method} {path}"})
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    def _answer(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )

    async def _stream(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        ask = StampedRequest.model_validate_json(body["messages"][-1]["content"])
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        writer.write(_http_chunk(_chunk(ask.tag, {"role": "assistant", "content": ""})))
        loop = asyncio.get_running_loop()
        start = loop.time()
        parts: list[str] = []
        for i in range(ask.chunks):
            wait = start + (i + 1) * ask.delay_ms / 1000 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            content = f"<{i}:{time.time_ns()}> "
            writer.write(_http_chunk(_chunk(ask.tag, {"content": content})))
            parts.append(content)
            await writer.drain()
        usage = {"prompt_tokens": 10, "completion_tokens": ask.chunks}
        usage["total_tokens"] = 10 + ask.chunks
        writer.write(_http_chunk(_chunk(ask.tag, {}, "stop")))
        writer.write(_http_chunk(_chunk(ask.tag, {}, usage=usage)))
        writer.write(_http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.sent[ask.tag] = "".join(parts)


async def serve(port: int) -> None:
    upstream = StampedUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port, backlog=512)
    print(f"stamped upstream ready on {port}", flush=True)
    async with server:
        await server.serve_forever()


@dataclass
class UpstreamProcess:
    """The parent's handle: where the upstream listens, what it sent, and stopping it."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @classmethod
    def start(cls) -> UpstreamProcess:
        port = free_port()
        return cls(spawn_server("benchmarks.upstream", port, probe="/sent/-"), port)

    async def sent(self, client: httpx.AsyncClient, tag: str) -> str:
        """The exact text the finished request `tag` sent."""
        r = await client.get(f"http://127.0.0.1:{self.port}/sent/{tag}")
        r.raise_for_status()
        return str(r.json()["text"])

    def stop(self) -> None:
        stop_server(self.proc)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(sys.argv[1])))
