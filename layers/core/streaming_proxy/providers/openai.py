"""OpenAI Chat Completions streaming, also spoken by Azure, Ollama, vLLM, Groq and OpenRouter."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from ..errors import ProviderNotConfigured, UpstreamError, ValidationFailed
from ..events import Finish, FinishReason, ProviderEvent, TextDelta, ThinkingDelta, ToolCallDelta
from ..events import Usage as UsageEvent
from ..textcheck import model_json
from .base import LlmRequest, pick_key, upstream_message
from .settings import openai_settings
from .sse import open_event_stream
from .translate import openai_tool_choice, parse_tool_choice

# Chat Completions chunks come unnamed; some compatible servers name their error frames.
_DATA_EVENTS = frozenset({"", "message", "error"})
# Body fields a request's provider_args cannot replace: they decide what is streamed and how.
_FIXED_FIELDS = frozenset({"model", "messages", "stream"})

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _FunctionDelta(_Wire):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(_Wire):
    index: int | None = None
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(_Wire):
    content: str | None = None
    # DeepSeek and vLLM say reasoning_content, OpenRouter and Ollama say reasoning.
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(_Wire):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(_Wire):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _ErrorBody(_Wire):
    message: str | None = None
    code: int | str | None = None


class _Chunk(_Wire):
    """One `chat.completion.chunk`, or an error payload sent after HTTP 200."""

    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: _ErrorBody | str | None = None


class OpenAIProvider:
    """Streams `POST {base_url}/chat/completions` and normalises its chunks."""

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        base_url: str,
        server_key: SecretStr | None,
        *,
        key_optional: bool = False,
        compatible: bool = False,
    ) -> None:
        self.name = name
        # A compatible server (Ollama, vLLM, Groq, ...) rather than OpenAI or Azure itself.
        self._compatible = compatible
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._server_key = server_key
        self._key_optional = key_optional

    def prepare(self, request: LlmRequest) -> None:
        """Reject requests without a model, without a key where the endpoint needs one, or
        with settings the endpoint cannot take."""
        if not request.model:
            raise ValidationFailed(f"payload.model is required for provider '{self.name}'")
        self._key(request)
        self._body(request)

    async def stream(self, request: LlmRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Yield normalised events in arrival order; the upstream response always closes."""
        self.prepare(request)
        async with open_event_stream(
            self._http,
            self._url(request),
            provider=self.name,
            json=self._body(request),
            headers=self._headers(request),
        ) as events:
            finished = False
            async for sse in events:
                data = sse.data.strip()
                if sse.event not in _DATA_EVENTS or not data:
                    continue  # comments never get here; pings and unknown names do
                if data == "[DONE]":
                    return
                for event in _events_of(self._parse(sse.event, data)):
                    finished = finished or isinstance(event, Finish)
                    yield event
            if not finished:
                raise UpstreamError(f"{self.name} stream ended early")

    def _url(self, request: LlmRequest) -> str:
        return f"{self._base_url}/chat/completions"

    def _headers(self, request: LlmRequest) -> dict[str, str]:
        key = self._key(request)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _key(self, request: LlmRequest) -> str | None:
        try:
            return pick_key(request, self._server_key, self.name)
        except ProviderNotConfigured:
            if self._key_optional:
                return None
            raise

    def _body(self, request: LlmRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": openai_messages(request.messages),
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = request.tools
        choice = parse_tool_choice(request.tool_choice)
        if choice is not None:
            body["tool_choice"] = openai_tool_choice(choice)
        settings = openai_settings(request, self.name, compatible=self._compatible)
        native = {k: v for k, v in request.provider_args.items() if k not in _FIXED_FIELDS}
        body.update(settings.combine(native))
        body["stream"] = True
        return body

    def _parse(self, event: str, data: str) -> _Chunk:
        try:
            chunk = _Chunk.model_validate_json(data)
        except ValidationError:
            chunk = self._repaired(data)
        if chunk.error is not None:
            raise _stream_error(self.name, chunk.error)
        if event == "error":
            message = upstream_message(data.encode("utf-8"))
            raise UpstreamError(f"{self.name} stream error: {message}")
        return chunk

    def _repaired(self, data: str) -> _Chunk:
        """A chunk pydantic's parser refused: a model's lone surrogate (`"\\ud800"`), which
        the text keeps as U+FFFD as every adapter's does, or no chunk at all."""
        try:
            return _Chunk.model_validate(model_json(data))
        except (ValueError, ValidationError) as e:
            raise UpstreamError(f"{self.name} sent a stream chunk that is not a JSON chunk") from e


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as OpenAI takes them: without this proxy's extension fields
    (`reasoning_blocks`, a tool call's `thought_signature`: OpenAI answers 400 to a field it
    does not know), and with call arguments as a JSON string (the contract also takes an
    object)."""
    return [_without_extensions(message) for message in messages]


def _without_extensions(message: dict[str, Any]) -> dict[str, Any]:
    clean = {k: v for k, v in message.items() if k != "reasoning_blocks"}
    calls = clean.get("tool_calls")
    if isinstance(calls, list):
        clean["tool_calls"] = [
            _openai_call(call) if isinstance(call, dict) else call for call in calls
        ]
    return clean


def _openai_call(call: dict[str, Any]) -> dict[str, Any]:
    clean = {k: v for k, v in call.items() if k != "thought_signature"}
    function = clean.get("function")
    if isinstance(function, dict) and isinstance(function.get("arguments"), dict):
        arguments = json.dumps(function["arguments"], ensure_ascii=False)
        clean["function"] = {**function, "arguments": arguments}
    return clean


def _events_of(chunk: _Chunk) -> Iterator[ProviderEvent]:
    """The normalised events of one chunk; only choice 0 is followed (n > 1 is not streamed)."""
    for choice in chunk.choices or ():
        if choice.index != 0:
            continue
        delta = choice.delta or _Delta()
        thinking = delta.reasoning_content or delta.reasoning
        if thinking:
            yield ThinkingDelta(thinking)
        if delta.content:
            yield TextDelta(delta.content)
        for position, call in enumerate(delta.tool_calls or ()):
            function = call.function or _FunctionDelta()
            if call.id or function.name or function.arguments:
                yield ToolCallDelta(
                    index=position if call.index is None else call.index,
                    id=call.id or None,
                    name=function.name or None,
                    arguments=function.arguments or "",
                )
        if choice.finish_reason:
            yield Finish(_FINISH_REASONS.get(choice.finish_reason, "stop"))
    if chunk.usage is not None:
        yield UsageEvent(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)


def _stream_error(provider: str, error: _ErrorBody | str) -> UpstreamError:
    if isinstance(error, str):
        return UpstreamError(f"{provider} stream error: {error}")
    # OpenRouter puts the HTTP status it would have sent in `code`; OpenAI uses names there.
    status = error.code if isinstance(error.code, int) and 400 <= error.code < 600 else None
    return UpstreamError(
        f"{provider} stream error: {error.message or 'no message'}", upstream_status=status
    )
