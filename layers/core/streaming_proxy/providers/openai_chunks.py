"""OpenAI `chat.completion.chunk` payloads read into normalised events.

Read with `json.loads` and checked field by field rather than through a pydantic model:
a provider chunk is the relay's hottest input and a model per chunk cost ~5 us of the
app's per-chunk budget. The checks are the models' were: every field this proxy reads must
have its type or be null (or absent), other fields are ignored, and anything else makes the
chunk malformed.
"""

from __future__ import annotations

import json
from typing import Any

from ..events import Finish, FinishReason, ProviderEvent, TextDelta, ThinkingDelta, ToolCallDelta
from ..events import Usage as UsageEvent

__all__ = ["MalformedChunk", "chunk_events", "parse_chunk", "stream_error_of"]

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}


class MalformedChunk(ValueError):
    """A payload that is not JSON, not an object, or has a field of the wrong type."""


def parse_chunk(data: str) -> dict[str, Any]:
    """One chunk's JSON object (an error payload sent after HTTP 200 is one too)."""
    try:
        chunk = json.loads(data)
    except ValueError as e:
        raise MalformedChunk("not JSON") from e
    if not isinstance(chunk, dict):
        raise MalformedChunk("not a JSON object")
    return chunk


def stream_error_of(chunk: dict[str, Any]) -> tuple[str, int | str | None] | None:
    """(message, code) of an in-stream error payload; None when the chunk is no error."""
    error = chunk.get("error")
    if error is None:
        return None
    if isinstance(error, str):
        return error, None
    body = _object(error, "error")
    code = body.get("code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int | str)):
        raise MalformedChunk("error.code")
    return _optional(body, "message", str) or "no message", code


def chunk_events(chunk: dict[str, Any]) -> list[ProviderEvent]:
    """The normalised events of one chunk; only choice 0 is followed (n > 1 is not
    streamed). A malformed chunk gives no event at all."""
    events: list[ProviderEvent] = []
    for choice in _optional(chunk, "choices", list) or ():
        choice = _object(choice, "choices[]")
        index = _optional(choice, "index", int)
        if index is not None and index != 0:
            continue
        _choice_events(choice, events)
    usage = _optional(chunk, "usage", dict)
    if usage is not None:
        prompt = _optional(usage, "prompt_tokens", int)
        events.append(UsageEvent(prompt, _optional(usage, "completion_tokens", int)))
    return events


def _choice_events(choice: dict[str, Any], events: list[ProviderEvent]) -> None:
    delta = _optional(choice, "delta", dict) or {}
    content = _optional(delta, "content", str)
    # DeepSeek and vLLM say reasoning_content, OpenRouter and Ollama say reasoning.
    reasoning = _optional(delta, "reasoning_content", str)
    thinking = reasoning or _optional(delta, "reasoning", str)
    if thinking:
        events.append(ThinkingDelta(thinking))
    if content:
        events.append(TextDelta(content))
    for position, call in enumerate(_optional(delta, "tool_calls", list) or ()):
        delta_call = _call_delta(position, _object(call, "tool_calls[]"))
        if delta_call is not None:
            events.append(delta_call)
    finish = _optional(choice, "finish_reason", str)
    if finish:
        events.append(Finish(_FINISH_REASONS.get(finish, "stop")))


def _call_delta(position: int, call: dict[str, Any]) -> ToolCallDelta | None:
    index = _optional(call, "index", int)
    call_id = _optional(call, "id", str)
    function = _optional(call, "function", dict) or {}
    name = _optional(function, "name", str)
    arguments = _optional(function, "arguments", str)
    if not (call_id or name or arguments):
        return None
    return ToolCallDelta(
        index=position if index is None else index,
        id=call_id or None,
        name=name or None,
        arguments=arguments or "",
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedChunk(where)
    return value


def _optional(obj: dict[str, Any], key: str, kind: type) -> Any:
    """`obj[key]` when it is a `kind` (a bool is no int), None when null or absent."""
    value = obj.get(key)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise MalformedChunk(key)
