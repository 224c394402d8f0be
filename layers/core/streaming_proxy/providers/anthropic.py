"""AnthropicProvider: the Messages API with `stream: true`, as normalised events."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..config import Settings
from ..errors import UpstreamError, ValidationFailed
from ..events import (
    Finish,
    FinishReason,
    ProviderEvent,
    RedactedThinking,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    Usage,
)
from ..upstream import token_count
from .base import LlmRequest, pick_key
from .settings import anthropic_settings
from .sse import open_event_stream
from .structured import as_answer
from .translate import (
    ImagePart,
    ReasoningBlock,
    RedactedBlock,
    TextPart,
    content_parts,
    function_tools,
    instructions_of,
    is_instruction,
    merge_adjacent,
    parse_tool_choice,
    read_event,
    reasoning_blocks_of,
    tool_calls_of,
    tool_result_of,
)

# The request itself decides these; provider_args cannot replace them.
_RESERVED_ARGS = frozenset({"messages", "stream", "model", "system", "tools", "tool_choice"})

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error types and the HTTP status each stands for (529 = overloaded).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicProvider:
    """Anthropic Messages API; base URL, version and server key come from settings only."""

    name = "anthropic"

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._http = http
        self._settings = settings

    def prepare(self, request: LlmRequest) -> None:
        pick_key(request, self._settings.anthropic_api_key, self.name)
        anthropic_body(request)

    async def stream(self, request: LlmRequest) -> AsyncGenerator[ProviderEvent, None]:
        headers = {
            "x-api-key": pick_key(request, self._settings.anthropic_api_key, self.name),
            "anthropic-version": self._settings.anthropic_version,
        }
        url = f"{self._settings.anthropic_base_url.rstrip('/')}/messages"
        body = anthropic_body(request)
        sampling = request.sampling
        async with open_event_stream(
            self._http, url, provider=self.name, json=body, headers=headers
        ) as events:
            state = _StreamState()
            async for sse in events:
                if not sse.data:
                    continue
                for event in as_answer(read_event(sse.data, self.name, state.feed), sampling):
                    yield event
                if state.finished:
                    return
        raise UpstreamError("anthropic stream ended before message_stop")


def anthropic_body(request: LlmRequest) -> dict[str, Any]:
    """The Messages API body for an OpenAI-style request; ValidationFailed if it cannot be."""
    # payload.model only: providerArgs.model never replaces it (so an app's policy, which
    # checks payload.model, decides the model that runs).
    if not request.model:
        raise ValidationFailed("anthropic requires payload.model")
    body: dict[str, Any] = {
        "model": request.model,
        "messages": anthropic_messages(request.messages),
    }
    system = instructions_of(request.messages)
    if system:
        body["system"] = system
    tools = function_tools(request.tools)
    if tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.parameters,
            }
            for t in tools
        ]
    choice = parse_tool_choice(request.tool_choice)
    if choice is not None and (tools or choice.mode == "none"):
        body["tool_choice"] = (
            {"type": "tool", "name": choice.name}
            if choice.mode == "function"
            else {"type": {"required": "any"}.get(choice.mode, choice.mode)}
        )
    native = {k: v for k, v in request.provider_args.items() if k not in _RESERVED_ARGS}
    body.update(anthropic_settings(request, body).combine(native))
    body["stream"] = True
    return body


def anthropic_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """User/assistant/tool messages as Anthropic turns; tool results become user turns."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if is_instruction(message):
            continue
        if role == "user":
            blocks = _blocks(message.get("content"))
        elif role == "assistant":
            blocks = _assistant_blocks(message)
        elif role == "tool":
            blocks = [_tool_result(message)]
            role = "user"
        else:
            raise ValidationFailed(f"unsupported message role: {role!r}")
        if blocks:
            turns.append({"role": role, "content": blocks})
    return merge_adjacent(turns, "content")


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Reasoning first (signed, so extended thinking survives tool rounds), text, tool uses."""
    blocks = _reasoning(reasoning_blocks_of(message))
    blocks += _blocks(message.get("content"))
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in tool_calls_of(message)
    ]
    return blocks


def _reasoning(blocks: list[ReasoningBlock]) -> list[dict[str, Any]]:
    # Anthropic rejects a thinking block without its signature; one that never had one (the
    # reasoning of another provider) is left out, as earlier turns' thinking may be.
    return [
        {"type": "redacted_thinking", "data": block.data}
        if isinstance(block, RedactedBlock)
        else {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
        for block in blocks
        if isinstance(block, RedactedBlock) or block.signature
    ]


def _blocks(content: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in content_parts(content):
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append({"type": "image", "source": _image_source(part)})
    return blocks


def _image_source(part: ImagePart) -> dict[str, Any]:
    if part.data is None:
        return {"type": "url", "url": part.url}
    return {"type": "base64", "media_type": part.mime, "data": part.base64()}


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    result = tool_result_of(message)
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": result.call_id,
        "content": _blocks(content) if isinstance(content, list) else result.text,
    }
    if result.failed:
        block["is_error"] = True
    return block


@dataclass(slots=True)
class _StreamState:
    """What one Messages stream has said so far: block kinds, tool numbering, usage."""

    tool_index: dict[int, int] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    stop_reason: FinishReason = "stop"
    finished: bool = False

    def feed(self, data: dict[str, Any]) -> list[ProviderEvent]:
        kind = data.get("type")
        if kind == "content_block_start":
            return self._block_start(data.get("index", 0), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(data.get("index", 0), data.get("delta") or {})
        if kind == "message_start":
            return self._usage((data.get("message") or {}).get("usage"))
        if kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self.stop_reason = _STOP_REASONS.get(reason, "stop")
            return self._usage(data.get("usage"))
        if kind == "message_stop":
            self.finished = True
            return [Finish(self.stop_reason)]
        if kind == "error":
            error = data.get("error") or {}
            raise _stream_error(error if isinstance(error, dict) else {"message": str(error)})
        return []  # ping, content_block_stop and event types newer than this adapter

    def _block_start(self, index: int, block: dict[str, Any]) -> list[ProviderEvent]:
        kind = block.get("type")
        if kind == "tool_use":
            self.tool_index[index] = number = len(self.tool_index)
            return [ToolCallDelta(number, id=block.get("id"), name=block.get("name"))]
        if kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        if kind == "thinking" and block.get("thinking"):
            return [ThinkingDelta(block["thinking"])]
        if kind == "redacted_thinking" and block.get("data"):
            return [RedactedThinking(block["data"])]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[ProviderEvent]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [TextDelta(delta["text"])]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self.tool_index:
            return [ToolCallDelta(self.tool_index[index], arguments=delta["partial_json"])]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [ThinkingDelta(delta["thinking"])]
        if kind == "signature_delta" and delta.get("signature"):
            return [ThinkingSignature(delta["signature"])]
        return []  # citations_delta and delta types newer than this adapter

    def _usage(self, usage: dict[str, Any] | None) -> list[ProviderEvent]:
        if not usage:
            return []
        # Counts are cumulative: each one present replaces what we had (never added). One
        # that is no count (a string, NaN) is left out: the usage is then estimated.
        prompt = token_count(usage.get("input_tokens"))
        if prompt is not None:
            self.prompt_tokens = (
                prompt
                + (token_count(usage.get("cache_creation_input_tokens")) or 0)
                + (token_count(usage.get("cache_read_input_tokens")) or 0)
            )
        completion = token_count(usage.get("output_tokens"))
        if completion is not None:
            self.completion_tokens = completion
        return [Usage(self.prompt_tokens, self.completion_tokens)]


def _stream_error(error: dict[str, Any]) -> UpstreamError:
    kind = str(error.get("type") or "error")
    message = error.get("message") or kind
    return UpstreamError(
        f"anthropic stream error ({kind}): {message}",
        upstream_status=_ERROR_STATUS.get(kind),
        details=f"anthropic error type {kind}",
    )
