"""One model turn of the fake upstreams, written in each provider's stream format.

`FakeTurn` says what the model says (reasoning, text, tool calls, usage); the renderers
turn it into OpenAI chunks, Anthropic events, Gemini responses (SSE frames) or the
Converse event dicts botocore yields. Arguments stream in small pieces, as real models do.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Wire = Literal["openai", "anthropic", "gemini", "converse"]

ARGUMENT_PIECE = 6  # characters of arguments JSON per streamed fragment


@dataclass(frozen=True)
class FakeCall:
    """A tool call the fake asks for; `id` None on Gemini (it sends none), `signature` is
    Gemini's thoughtSignature of the call."""

    id: str | None
    name: str
    arguments: dict[str, Any]
    signature: str | None = None

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class FakeThinking:
    """A signed reasoning block (Anthropic, Bedrock)."""

    text: str
    signature: str


@dataclass(frozen=True)
class FakeTurn:
    text: str = ""
    thinking: FakeThinking | None = None
    calls: tuple[FakeCall, ...] = ()
    usage: tuple[int, int] = (20, 10)

    def text_pieces(self) -> list[str]:
        """The text as streamed: word by word, each space kept with its word."""
        words = self.text.split(" ")
        return [w + " " for w in words[:-1]] + ([words[-1]] if words[-1] else [])


def _pieces(text: str) -> list[str]:
    return [text[i : i + ARGUMENT_PIECE] for i in range(0, len(text), ARGUMENT_PIECE)]


# -- OpenAI Chat Completions ----------------------------------------------------------------


def openai_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
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


def openai_frames(turn: FakeTurn) -> Iterator[str]:
    yield openai_chunk({"role": "assistant", "content": ""})
    for piece in turn.text_pieces():
        yield openai_chunk({"content": piece})
    for index, call in enumerate(turn.calls):
        function = {"name": call.name, "arguments": ""}
        start = {"index": index, "id": call.id, "type": "function", "function": function}
        yield openai_chunk({"tool_calls": [start]})
        for piece in _pieces(call.arguments_json()):
            yield openai_chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield openai_chunk({}, "tool_calls" if turn.calls else "stop")
    prompt, completion = turn.usage
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    yield openai_chunk(None, usage={**usage, "total_tokens": prompt + completion})
    yield "data: [DONE]\n\n"


# -- Anthropic Messages -----------------------------------------------------------------------


def anthropic_event(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n"


def _anthropic_block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[str]:
    frames = [anthropic_event("content_block_start", {"index": index, "content_block": start})]
    frames += [anthropic_event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
    return [*frames, anthropic_event("content_block_stop", {"index": index})]


def _anthropic_blocks(turn: FakeTurn) -> list[list[str]]:
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if turn.thinking is not None:
        thinking = [{"type": "thinking_delta", "thinking": p} for p in _pieces(turn.thinking.text)]
        signed = {"type": "signature_delta", "signature": turn.thinking.signature}
        blocks.append(({"type": "thinking", "thinking": ""}, [*thinking, signed]))
    if turn.text:
        text = [{"type": "text_delta", "text": p} for p in turn.text_pieces()]
        blocks.append(({"type": "text", "text": ""}, text))
    for call in turn.calls:
        start: dict[str, Any] = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        json_deltas = [
            {"type": "input_json_delta", "partial_json": p} for p in _pieces(call.arguments_json())
        ]
        blocks.append((start, json_deltas))
    return [_anthropic_block(i, start, deltas) for i, (start, deltas) in enumerate(blocks)]


def anthropic_frames(turn: FakeTurn, model: str = "fake") -> Iterator[str]:
    prompt, completion = turn.usage
    message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model}
    usage = {"input_tokens": prompt, "output_tokens": 1}
    yield anthropic_event("message_start", {"message": {**message, "content": [], "usage": usage}})
    yield anthropic_event("ping", {})
    for block in _anthropic_blocks(turn):
        yield from block
    stop = {"stop_reason": "tool_use" if turn.calls else "end_turn", "stop_sequence": None}
    yield anthropic_event("message_delta", {"delta": stop, "usage": {"output_tokens": completion}})
    yield anthropic_event("message_stop", {})


# -- Gemini streamGenerateContent -------------------------------------------------------------


def gemini_frame(
    parts: list[dict[str, Any]], finish: str | None = None, usage: tuple[int, int] | None = None
) -> str:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": "fake"}
    if usage is not None:
        prompt, completion = usage
        body["usageMetadata"] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
        }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _gemini_call(call: FakeCall) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
    if call.signature:
        part["thoughtSignature"] = call.signature
    return part


def gemini_frames(turn: FakeTurn) -> Iterator[str]:
    """Text piece by piece; the calls arrive whole, all in the last response (as Gemini does)."""
    pieces = turn.text_pieces()
    for piece in pieces[:-1] if not turn.calls else pieces:
        yield gemini_frame([{"text": piece}])
    last = [_gemini_call(c) for c in turn.calls] or [{"text": pieces[-1] if pieces else ""}]
    yield gemini_frame(last, "STOP", turn.usage)


# -- Bedrock ConverseStream (the dicts botocore yields) --------------------------------------


def converse_events(turn: FakeTurn) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"messageStart": {"role": "assistant"}}]
    index = 0
    if turn.thinking is not None:
        reasoning = [{"text": p} for p in _pieces(turn.thinking.text)]
        reasoning.append({"signature": turn.thinking.signature})
        events += _converse_block(index, None, [{"reasoningContent": r} for r in reasoning])
        index += 1
    if turn.text:
        events += _converse_block(index, None, [{"text": p} for p in turn.text_pieces()])
        index += 1
    for call in turn.calls:
        start = {"toolUse": {"toolUseId": call.id, "name": call.name}}
        inputs = [{"toolUse": {"input": p}} for p in _pieces(call.arguments_json())]
        events += _converse_block(index, start, inputs)
        index += 1
    events.append({"messageStop": {"stopReason": "tool_use" if turn.calls else "end_turn"}})
    prompt, completion = turn.usage
    usage = {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}
    events.append({"metadata": {"usage": usage, "metrics": {"latencyMs": 5}}})
    return events


def _converse_block(
    index: int, start: dict[str, Any] | None, deltas: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if start is not None:
        events.append({"contentBlockStart": {"start": start, "contentBlockIndex": index}})
    events += [{"contentBlockDelta": {"delta": d, "contentBlockIndex": index}} for d in deltas]
    events.append({"contentBlockStop": {"contentBlockIndex": index}})
    return events


def sse_frames(wire: Wire, turn: FakeTurn, model: str) -> Iterator[str]:
    """The turn as the SSE frames of an HTTP provider."""
    if wire == "openai":
        return openai_frames(turn)
    if wire == "anthropic":
        return anthropic_frames(turn, model)
    if wire == "gemini":
        return gemini_frames(turn)
    raise ValueError(f"{wire} has no SSE form")


def event_stream_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream message (what Bedrock's ConverseStream answers with, framed as
    botocore parses it): prelude (total and headers length, CRC32), string headers, the JSON
    payload, and a CRC32 of all of it."""
    headers = b"".join(
        bytes([len(name)]) + name + b"\x07" + len(value).to_bytes(2, "big") + value
        for name, value in (
            (b":event-type", event_type.encode()),
            (b":content-type", b"application/json"),
            (b":message-type", b"event"),
        )
    )
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    message = prelude + headers + body
    return message + zlib.crc32(message).to_bytes(4, "big")
