"""GeminiProvider: `streamGenerateContent?alt=sse`, as normalised events."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import Settings
from ..errors import UpstreamError
from ..events import (
    Finish,
    FinishReason,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from ..upstream import token_count
from .base import LlmRequest, pick_key
from .gemini_request import gemini_body, model_path
from .sse import open_event_stream
from .translate import read_event

_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)


def _random_call_id(number: int) -> str:
    # Gemini gives no call ids; ids must still be unique across the turns of a conversation.
    return f"call_{secrets.token_hex(6)}_{number}"


class GeminiProvider:
    """Google Gemini API; base URL and server key come from settings only."""

    name = "gemini"

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        *,
        call_id: Callable[[int], str] = _random_call_id,
    ) -> None:
        self._http = http
        self._settings = settings
        self._call_id = call_id

    def prepare(self, request: LlmRequest) -> None:
        pick_key(request, self._settings.gemini_api_key, self.name)
        model_path(request)
        gemini_body(request)

    async def stream(self, request: LlmRequest) -> AsyncGenerator[ProviderEvent, None]:
        headers = {"x-goog-api-key": pick_key(request, self._settings.gemini_api_key, self.name)}
        base = self._settings.gemini_base_url.rstrip("/")
        url = f"{base}/{model_path(request)}:streamGenerateContent?alt=sse"
        body = gemini_body(request)
        state = _StreamState(self._call_id)
        async with open_event_stream(
            self._http, url, provider=self.name, json=body, headers=headers
        ) as events:
            async for sse in events:
                if sse.data:
                    for event in read_event(sse.data, self.name, state.feed):
                        yield event
        # No end marker in this format but the last response's `finishReason` (empty while
        # the model has not stopped): a body that ends before one is a cut answer.
        if state.reason is None and not state.blocked:
            raise UpstreamError(f"{self.name} stream ended early")
        yield Finish(state.finish_reason())


@dataclass(slots=True)
class _StreamState:
    """What one Gemini stream has said so far: tool calls, usage, the finish reason."""

    call_id: Callable[[int], str]
    tool_calls: int = 0
    usage: Usage | None = None
    reason: str | None = None
    blocked: bool = False

    def feed(self, data: dict[str, Any]) -> list[ProviderEvent]:
        if "error" in data:
            raise _stream_error(data["error"])
        events: list[ProviderEvent] = []
        if (data.get("promptFeedback") or {}).get("blockReason"):
            self.blocked = True
        candidates = data.get("candidates") or [{}]
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or []:
            events.extend(self._part(part))
        if candidate.get("finishReason"):
            self.reason = candidate["finishReason"]
        events.extend(self._usage(data.get("usageMetadata")))
        return events

    def _part(self, part: dict[str, Any]) -> list[ProviderEvent]:
        if "functionCall" in part:
            call = part["functionCall"] or {}
            number, self.tool_calls = self.tool_calls, self.tool_calls + 1
            return [
                ToolCallDelta(
                    number,
                    id=call.get("id") or self.call_id(number),
                    name=call.get("name"),
                    arguments=json.dumps(call.get("args") or {}, ensure_ascii=False),
                    # Gemini 3 rejects the next request if the call comes back without it.
                    signature=part.get("thoughtSignature") or None,
                )
            ]
        text = part.get("text")
        if not text:
            return []
        return [ThinkingDelta(text) if part.get("thought") else TextDelta(text)]

    def _usage(self, metadata: dict[str, Any] | None) -> list[ProviderEvent]:
        if not metadata:
            return []
        # A count that is no count (a string, NaN) is left out: the usage is then estimated.
        prompt = token_count(metadata.get("promptTokenCount"))
        output = token_count(metadata.get("candidatesTokenCount"))
        thoughts = token_count(metadata.get("thoughtsTokenCount"))
        completion = (
            None if output is None and thoughts is None else (output or 0) + (thoughts or 0)
        )
        usage = Usage(prompt, completion)
        if usage == self.usage:
            return []
        self.usage = usage
        return [usage]

    def finish_reason(self) -> FinishReason:
        if self.blocked or self.reason in _FILTERED:
            return "content_filter"
        if self.reason == "MAX_TOKENS":
            return "length"
        return "tool_calls" if self.tool_calls else "stop"


def _stream_error(error: Any) -> UpstreamError:
    if not isinstance(error, dict):
        return UpstreamError(f"gemini stream error: {error}")
    code = error.get("code")
    status = error.get("status") or "error"
    return UpstreamError(
        f"gemini stream error ({status}): {error.get('message') or status}",
        upstream_status=code if isinstance(code, int) else None,
        details=f"gemini status {status}",
    )
