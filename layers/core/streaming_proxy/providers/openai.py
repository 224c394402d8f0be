"""OpenAI Chat Completions streaming, also spoken by Azure, Ollama, vLLM, Groq and OpenRouter."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from pydantic import SecretStr

from ..errors import ProviderNotConfigured, UpstreamError, ValidationFailed
from ..events import Finish, ProviderEvent
from .base import LlmRequest, pick_key, upstream_message
from .openai_chunks import MalformedChunk, chunk_events, parse_chunk, stream_error_of
from .settings import openai_settings
from .sse import open_event_stream
from .translate import openai_tool_choice, parse_tool_choice

# Chat Completions chunks come unnamed; some compatible servers name their error frames.
_DATA_EVENTS = frozenset({"", "message", "error"})
# Body fields a request's provider_args cannot replace: they decide what is streamed and how.
_FIXED_FIELDS = frozenset({"model", "messages", "stream"})


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
                for event in self._parse(sse.event, data):
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

    def _parse(self, event: str, data: str) -> list[ProviderEvent]:
        """The events of one chunk; an error payload or a malformed chunk raises."""
        try:
            chunk = parse_chunk(data)
            error = stream_error_of(chunk)
            if error is None and event != "error":
                return chunk_events(chunk)
        except MalformedChunk as e:
            raise UpstreamError(f"{self.name} sent a stream chunk that is not a JSON chunk") from e
        if error is not None:
            raise _stream_error(self.name, *error)
        message = upstream_message(data.encode("utf-8"))
        raise UpstreamError(f"{self.name} stream error: {message}")


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


def _stream_error(provider: str, message: str, code: int | str | None) -> UpstreamError:
    # OpenRouter puts the HTTP status it would have sent in `code`; OpenAI uses names there.
    status = code if isinstance(code, int) and 400 <= code < 600 else None
    return UpstreamError(f"{provider} stream error: {message}", upstream_status=status)
