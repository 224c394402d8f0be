"""A fake LLM upstream for integration tests: OpenAI- and Anthropic-format streams on loopback.

The model name picks the script: `fake-text`, `fake-tools`, `fake-slow`, `fake-nousage`,
`fake-error`. The `fake-echo-*` models fail the way some providers and proxies in front of
them do, echoing the request (headers, keys and all) back: `fake-echo-json` (HTTP 400 with
the echo in `error.message`), `fake-echo-html` (HTTP 502, an HTML page), `fake-echo-text`
(HTTP 500, plain text) and `fake-echo-stream` (HTTP 200, some text, then an in-stream error
frame quoting the request). It records every request and whether the proxy hung up
mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TEXT = "Hello from the fake upstream, with ünïcödé and 日本語 🎉."
TOOL_ARGS = '{"city": "Amsterdam", "userMessage": "Checking the weather"}'


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    disconnected: threading.Event = field(default_factory=threading.Event)


def _openai_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake",
        "choices": choices,
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n"


def openai_script(model: str) -> Iterator[str | float]:
    if model == "fake-tools":
        yield _openai_chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_fake1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
            }
        )
        for i in range(0, len(TOOL_ARGS), 4):
            yield _openai_chunk(
                {"tool_calls": [{"index": 0, "function": {"arguments": TOOL_ARGS[i : i + 4]}}]}
            )
        yield _openai_chunk({}, "tool_calls")
        yield _openai_chunk(
            None, usage={"prompt_tokens": 21, "completion_tokens": 17, "total_tokens": 38}
        )
        yield "data: [DONE]\n\n"
        return
    count = 200 if model == "fake-slow" else 1
    words = TEXT.split(" ")
    yield _openai_chunk({"role": "assistant", "content": ""})
    for n in range(count):
        for i, word in enumerate(words):
            yield _openai_chunk({"content": word if i == 0 and n == 0 else " " + word})
            if model == "fake-slow":
                yield 0.05
    if model == "fake-error":
        yield 'data: {"error": {"message": "the fake model fell over", "type": "server_error"}}\n\n'
        return
    yield _openai_chunk({}, "stop")
    if model != "fake-nousage":
        yield _openai_chunk(
            None, usage={"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
        )
    yield "data: [DONE]\n\n"


def _anthropic(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n"


def anthropic_script(model: str) -> Iterator[str | float]:
    yield _anthropic(
        "message_start",
        {
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                **(
                    {}
                    if model == "fake-nousage"
                    else {"usage": {"input_tokens": 25, "output_tokens": 1}}
                ),
            }
        },
    )
    yield _anthropic("ping", {})
    block = 0
    if model != "fake-tools":
        yield _anthropic(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        for word in TEXT.split(" "):
            yield _anthropic(
                "content_block_delta",
                {"index": 0, "delta": {"type": "text_delta", "text": word + " "}},
            )
        yield _anthropic("content_block_stop", {"index": 0})
        stop = "end_turn"
    else:
        yield _anthropic(
            "content_block_start",
            {
                "index": block,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_fake1",
                    "name": "get_weather",
                    "input": {},
                },
            },
        )
        for i in range(0, len(TOOL_ARGS), 5):
            yield _anthropic(
                "content_block_delta",
                {
                    "index": block,
                    "delta": {"type": "input_json_delta", "partial_json": TOOL_ARGS[i : i + 5]},
                },
            )
        yield _anthropic("content_block_stop", {"index": block})
        stop = "tool_use"
    usage = {"output_tokens": 33} if model != "fake-nousage" else {}
    yield _anthropic(
        "message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage}
    )
    yield _anthropic("message_stop", {})


def _echo_failure(model: str, request: Request, body: dict[str, Any], script: Any) -> Response:
    """An error that repeats what the proxy sent, as careless upstreams do. The credential
    headers come first, so no length limit on the proxy's side can be what hides them."""
    credentials = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
    headers = {name: request.headers[name] for name in credentials if name in request.headers}
    headers.update(request.headers)
    echo = json.dumps({"headers": headers, "url": str(request.url), "body": body})
    if model == "fake-echo-json":
        error = {"message": f"bad request: {echo}", "type": "invalid_request_error"}
        return JSONResponse({"error": error, "request": json.loads(echo)}, 400)
    if model == "fake-echo-html":
        page = f"<html><body><h1>502 Bad Gateway</h1><pre>{echo}</pre></body></html>"
        return Response(page, 502, media_type="text/html")
    if model == "fake-echo-text":
        return Response(f"upstream failed for {echo}", 500, media_type="text/plain")

    async def frames() -> AsyncIterator[bytes]:
        for step in list(script("fake-text"))[:4]:
            if isinstance(step, str):
                yield step.encode()
        if script is anthropic_script:
            error = {"type": "api_error", "message": f"failed on {echo}"}
            yield _anthropic("error", {"error": error}).encode()
        else:
            frame = {"error": {"message": f"failed on {echo}", "type": "server_error"}}
            yield f"data: {json.dumps(frame)}\n\n".encode()

    return StreamingResponse(frames(), media_type="text/event-stream")


class FakeLlm:
    """Serves the scripts under uvicorn in a background thread."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def last(self, path_suffix: str) -> Recorded:
        return [r for r in self.requests if r.path.endswith(path_suffix)][-1]

    def app(self) -> Starlette:
        async def openai(request: Request) -> Response:
            return await self._serve(request, openai_script)

        async def anthropic(request: Request) -> Response:
            return await self._serve(request, anthropic_script)

        return Starlette(
            routes=[
                Route("/v1/chat/completions", openai, methods=["POST"]),
                Route("/v1/messages", anthropic, methods=["POST"]),
            ]
        )

    async def _serve(self, request: Request, script: Any) -> Response:
        body = await request.json()
        recorded = Recorded(request.url.path, dict(request.headers), body)
        self.requests.append(recorded)
        model = str(body.get("model", ""))
        if model.startswith("fake-echo-"):
            return _echo_failure(model, request, body, script)
        if model == "fake-unauthorized":
            return JSONResponse(
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                    }
                },
                401,
            )

        async def frames() -> AsyncIterator[bytes]:
            try:
                for step in script(model):
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        yield step.encode()
            finally:
                recorded.disconnected.set()

        return StreamingResponse(frames(), media_type="text/event-stream")

    def start(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
