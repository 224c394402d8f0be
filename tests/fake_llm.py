"""A fake LLM upstream for integration tests: OpenAI-, Anthropic- and Gemini-format streams
on loopback, and Bedrock's ConverseStream (AWS event-stream) for the tool-loop models.

The model name picks the script: `fake-text`, `fake-tools`, `fake-slow`, `fake-nousage`,
`fake-error`. The `fake-echo-*` models fail the way some providers and proxies in front of
them do, echoing the request (headers, keys and all) back: `fake-echo-json` (HTTP 400 with
the echo in `error.message`), `fake-echo-html` (HTTP 502, an HTML page), `fake-echo-text`
(HTTP 500, plain text) and `fake-echo-stream` (HTTP 200, some text, then an in-stream error
frame quoting the request); `fake-echo-key-text` succeeds, saying the credential it was sent
twice in its answer and once in its reasoning, the text cut every 5 characters.
`fake-tool-loop`, `fake-tool-loop-parallel` and `fake-tool-forever` play a tool loop and
check the tool round comes back in the provider's exact format (tests/fake_tool_loop.py).
It records every request and whether the proxy hung up mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fake_tool_loop import TOOL_LOOP_MODELS, WrongFormat, error_body, next_turn
from tests.fake_wire import (
    FakeCall,
    FakeThinking,
    FakeTurn,
    Wire,
    anthropic_event,
    anthropic_frames,
    converse_events,
    event_stream_message,
    gemini_frame,
    gemini_frames,
    openai_chunk,
    openai_frames,
    sse_frames,
)
from tests.loopback import LoopbackServer

TEXT = "Hello from the fake upstream, with ünïcödé and 日本語 🎉."
TOOL_ARGS = '{"city": "Amsterdam", "userMessage": "Checking the weather"}'


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    disconnected: threading.Event = field(default_factory=threading.Event)


def _weather_call(call_id: str | None) -> FakeTurn:
    """The `fake-tools` turn: one get_weather call with TOOL_ARGS."""
    call = FakeCall(call_id, "get_weather", json.loads(TOOL_ARGS))
    assert call.arguments_json() == TOOL_ARGS
    return FakeTurn(calls=(call,))


def openai_script(model: str) -> Iterator[str | float]:
    if model == "fake-tools":
        yield from openai_frames(replace(_weather_call("call_fake1"), usage=(21, 17)))
        return
    count = 200 if model == "fake-slow" else 1
    words = TEXT.split(" ")
    yield openai_chunk({"role": "assistant", "content": ""})
    for n in range(count):
        for i, word in enumerate(words):
            yield openai_chunk({"content": word if i == 0 and n == 0 else " " + word})
            if model == "fake-slow":
                yield 0.05
    if model == "fake-error":
        yield 'data: {"error": {"message": "the fake model fell over", "type": "server_error"}}\n\n'
        return
    yield openai_chunk({}, "stop")
    if model != "fake-nousage":
        yield openai_chunk(
            None, usage={"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
        )
    yield "data: [DONE]\n\n"


def anthropic_script(model: str) -> Iterator[str | float]:
    if model == "fake-tools":
        yield from anthropic_frames(replace(_weather_call("toolu_fake1"), usage=(25, 33)), model)
        return
    message: dict[str, Any] = {"id": "msg_fake", "type": "message", "role": "assistant"}
    if model != "fake-nousage":
        message["usage"] = {"input_tokens": 25, "output_tokens": 1}
    yield anthropic_event("message_start", {"message": {**message, "model": model, "content": []}})
    yield anthropic_event("ping", {})
    yield anthropic_event(
        "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
    )
    for word in TEXT.split(" "):
        yield anthropic_event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word + " "}}
        )
    yield anthropic_event("content_block_stop", {"index": 0})
    usage = {"output_tokens": 33} if model != "fake-nousage" else {}
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    yield anthropic_event("message_delta", {"delta": stop, "usage": usage})
    yield anthropic_event("message_stop", {})


def gemini_script(model: str) -> Iterator[str | float]:
    """The named scripts as Gemini responses: text word by word, usage on the last one."""
    if model == "fake-tools":
        yield from gemini_frames(replace(_weather_call(None), usage=(21, 17)))
        return
    words = TEXT.split(" ")
    for n in range(200 if model == "fake-slow" else 1):
        for i, word in enumerate(words):
            yield gemini_frame([{"text": word if i == 0 and n == 0 else " " + word}])
            if model == "fake-slow":
                yield 0.05
    if model == "fake-error":
        error = {"code": 500, "message": "the fake model fell over", "status": "INTERNAL"}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    yield gemini_frame([], "STOP", None if model == "fake-nousage" else (12, 30))


SCRIPTS: dict[Wire, Callable[[str], Iterator[str | float]]] = {
    "openai": openai_script,
    "anthropic": anthropic_script,
    "gemini": gemini_script,
}


@dataclass(frozen=True)
class _CutTurn(FakeTurn):
    """A turn whose text streams in pieces of 5 characters, cut anywhere (keys included)."""

    def text_pieces(self) -> list[str]:
        return [self.text[i : i + 5] for i in range(0, len(self.text), 5)]


def sent_credential(headers: dict[str, str]) -> str:
    """The provider key the proxy sent in `headers` (any provider's header)."""
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        if name in headers:
            return headers[name]
    return headers["authorization"].removeprefix("Bearer ")


def echoed_key_text(key: str) -> str:
    return f"Here is what I was sent: {key}, and again: {key}. Nothing else."


def _echo_in_text(request: Request, wire: Wire) -> Response:
    key = sent_credential(dict(request.headers))
    thinking = FakeThinking(f"the caller's key is {key}", "sig-echo")
    turn = _CutTurn(text=echoed_key_text(key), thinking=thinking if wire == "anthropic" else None)

    async def frames() -> AsyncIterator[bytes]:
        for frame in sse_frames(wire, turn, "fake-echo-key-text"):
            yield frame.encode()

    return StreamingResponse(frames(), media_type="text/event-stream")


def _echo_failure(model: str, request: Request, body: dict[str, Any], wire: Wire) -> Response:
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
        for step in list(SCRIPTS[wire]("fake-text"))[:4]:
            if isinstance(step, str):
                yield step.encode()
        if wire == "anthropic":
            error = {"type": "api_error", "message": f"failed on {echo}"}
            yield anthropic_event("error", {"error": error}).encode()
        else:
            frame = {"error": {"message": f"failed on {echo}", "type": "server_error"}}
            yield f"data: {json.dumps(frame)}\n\n".encode()

    return StreamingResponse(frames(), media_type="text/event-stream")


class FakeLlm:
    """Serves the scripts under uvicorn in a background thread."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.port = 0
        self._loopback = LoopbackServer()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def gemini_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1beta"

    def last(self, path_suffix: str) -> Recorded:
        return [r for r in self.requests if r.path.endswith(path_suffix)][-1]

    def app(self) -> Starlette:
        async def openai(request: Request) -> Response:
            return await self._serve(request, "openai")

        async def anthropic(request: Request) -> Response:
            return await self._serve(request, "anthropic")

        async def azure(request: Request) -> Response:
            # Azure OpenAI: the deployment in the path, the Chat Completions wire in the body.
            return await self._serve(request, "openai", request.path_params["deployment"])

        async def gemini(request: Request) -> Response:
            # Gemini names the model in the path; `alt=sse` asks for SSE, the only form served.
            return await self._serve(request, "gemini", request.path_params["model"])

        return Starlette(
            routes=[
                Route("/model/{model_id}/converse-stream", self._converse, methods=["POST"]),
                Route("/v1/chat/completions", openai, methods=["POST"]),
                Route("/v1/messages", anthropic, methods=["POST"]),
                Route("/openai/deployments/{deployment}/chat/completions", azure, methods=["POST"]),
                Route("/v1beta/models/{model}:streamGenerateContent", gemini, methods=["POST"]),
            ]
        )

    async def _serve(self, request: Request, wire: Wire, model: str | None = None) -> Response:
        body = await request.json()
        recorded = Recorded(request.url.path, dict(request.headers), body)
        self.requests.append(recorded)
        model = model or str(body.get("model", ""))
        if model == "fake-echo-key-text":
            return _echo_in_text(request, wire)
        if model.startswith("fake-echo-"):
            return _echo_failure(model, request, body, wire)
        if model == "fake-unauthorized":
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, 401)
        steps: Iterable[str | float] = SCRIPTS[wire](model)
        if model in TOOL_LOOP_MODELS:
            try:
                steps = list(sse_frames(wire, next_turn(wire, model, body), model))
            except WrongFormat as e:
                return JSONResponse(error_body(wire, str(e)), 400)

        async def frames() -> AsyncIterator[bytes]:
            try:
                for step in steps:
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        yield step.encode()
            finally:
                recorded.disconnected.set()

        return StreamingResponse(frames(), media_type="text/event-stream")

    async def _converse(self, request: Request) -> Response:
        """Bedrock runtime's ConverseStream over HTTP (what boto3 calls with an endpoint URL):
        the model in the path, the request as JSON, the answer as AWS event-stream messages.
        Only `fake-text` and the tool-loop models are played here."""
        body = await request.json()
        recorded = Recorded(request.url.path, dict(request.headers), body)
        self.requests.append(recorded)
        model = request.path_params["model_id"]
        try:
            if model == "fake-text":
                events = converse_events(FakeTurn(text=TEXT, usage=(12, 30)))
            elif model not in TOOL_LOOP_MODELS:
                raise WrongFormat(f"{model} is not a Bedrock model of this fake")
            else:
                events = converse_events(next_turn("converse", model, body))
        except WrongFormat as e:
            error = {"message": f"fake-tool-loop: {e}"}
            return JSONResponse(error, 400, headers={"x-amzn-ErrorType": "ValidationException"})
        recorded.disconnected.set()
        frames = b"".join(
            event_stream_message(name, payload)
            for event in events
            for name, payload in event.items()
        )
        return Response(frames, media_type="application/vnd.amazon.eventstream")

    def start(self) -> None:
        self._loopback.start(self.app())
        self.port = self._loopback.port

    def stop(self) -> None:
        self._loopback.stop()
