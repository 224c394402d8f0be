"""GeminiProvider: `streamGenerateContent?alt=sse`, as normalised events."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import Settings
from ..errors import UpstreamError, ValidationFailed
from ..events import (
    Finish,
    FinishReason,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from .base import LlmRequest, pick_key
from .sse import open_event_stream
from .translate import (
    TextPart,
    content_parts,
    event_data,
    function_tools,
    instructions_of,
    is_instruction,
    merge_adjacent,
    parse_json_value,
    parse_tool_choice,
    stop_sequences,
    text_of,
    tool_call_id_of,
    tool_calls_of,
)

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)

# provider_args names that are not plain snake_case spellings of a generationConfig field.
_GENERATION_ALIASES = {
    "max_tokens": "maxOutputTokens",
    "maxTokens": "maxOutputTokens",
    "max_completion_tokens": "maxOutputTokens",
    "stop": "stopSequences",
    "n": "candidateCount",
}
# provider_args that belong at the top level of the request body, not in generationConfig.
_TOP_LEVEL = {
    "safety_settings": "safetySettings",
    "safetySettings": "safetySettings",
    "cached_content": "cachedContent",
    "cachedContent": "cachedContent",
    "labels": "labels",
}

# The JSON Schema keywords Gemini's function `parameters` schema understands; others are
# rejected with HTTP 400, so they are dropped (e.g. `additionalProperties`, `$schema`).
_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "items", "properties",
        "required", "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum",
        "pattern", "anyOf", "default", "example", "minProperties", "maxProperties",
        "propertyOrdering",
    }
)  # fmt: skip


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

    async def stream(self, request: LlmRequest) -> AsyncIterator[ProviderEvent]:
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
                    for event in state.feed(event_data(sse.data, self.name)):
                        yield event
        # No end marker in this format: the end of the body is the end of the answer.
        yield Finish(state.finish_reason())


def model_path(request: LlmRequest) -> str:
    """`models/<model>`; the model lands in the URL path, so it must be a plain name."""
    model = (request.model or "").removeprefix("models/")
    if not model:
        raise ValidationFailed("gemini requires payload.model")
    if not _MODEL.match(model):
        raise ValidationFailed(f"invalid gemini model name: {model!r}")
    return f"models/{model}"


def gemini_body(request: LlmRequest) -> dict[str, Any]:
    """The GenerateContentRequest body for an OpenAI-style request."""
    conversation = [m for m in request.messages if not is_instruction(m)]
    if not conversation or conversation[-1].get("role") not in ("user", "tool"):
        raise ValidationFailed("Gemini requires the last message to be from the user")
    body: dict[str, Any] = {"contents": gemini_contents(conversation)}
    system = instructions_of(request.messages)
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    tools = function_tools(request.tools)
    if tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.name,
                        **({"description": t.description} if t.description else {}),
                        **_parameters(t.parameters),
                    }
                    for t in tools
                ]
            }
        ]
    choice = parse_tool_choice(request.tool_choice)
    if choice is not None and tools:
        config: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE"}.get(choice.mode, "ANY")}
        if choice.name:
            config["allowedFunctionNames"] = [choice.name]
        body["toolConfig"] = {"functionCallingConfig": config}
    generation, top_level = _generation_config(request)
    if generation:
        body["generationConfig"] = generation
    body.update(top_level)
    return body


def gemini_contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as Gemini contents: assistant -> model, tool results -> functionResponse."""
    call_names: dict[str, str] = {}
    contents: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"))})
        elif role == "assistant":
            parts = _parts(message.get("content"))
            for call in tool_calls_of(message):
                call_names[call.id] = call.name
                parts.append({"functionCall": {"name": call.name, "args": call.arguments}})
            contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            contents.append({"role": "user", "parts": [_function_response(message, call_names)]})
        else:
            raise ValidationFailed(f"unsupported message role: {role!r}")
    return merge_adjacent([c for c in contents if c["parts"]], "parts")


def _parts(content: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for part in content_parts(content):
        if isinstance(part, TextPart):
            parts.append({"text": part.text})
        elif part.data is not None:
            parts.append({"inlineData": {"mimeType": part.mime, "data": part.base64()}})
        else:
            parts.append({"fileData": {"mimeType": part.mime, "fileUri": part.url}})
    return parts


def _function_response(message: dict[str, Any], call_names: dict[str, str]) -> dict[str, Any]:
    call_id = tool_call_id_of(message)
    name = call_names.get(call_id) or message.get("name")
    if not name:
        raise ValidationFailed(f"tool message answers unknown tool_call_id {call_id!r}")
    text = text_of(message.get("content"))
    value = parse_json_value(text)
    # `response` must be an object; Gemini's documented key for a plain result is "output".
    response = value if isinstance(value, dict) else {"output": text if value is None else value}
    return {"functionResponse": {"name": name, "response": response}}


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    # A function without parameters must omit them: an empty OBJECT schema is rejected.
    if schema.get("type") == "object" and not schema.get("properties"):
        return {}
    return {"parameters": _gemini_schema(schema)}


def _gemini_schema(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            result[key] = {name: _gemini_schema(sub) for name, sub in value.items()}
        elif key == "items":
            result[key] = _gemini_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            result[key] = [_gemini_schema(sub) for sub in value]
        elif key == "type" and isinstance(value, list):
            # JSON Schema ["string", "null"] is Gemini's type STRING + nullable.
            types = [t for t in value if t != "null"]
            result[key] = types[0] if types else "null"
            if "null" in value:
                result["nullable"] = True
        else:
            result[key] = value
    return result


def _generation_config(request: LlmRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """generationConfig (request's camelCase config, then provider_args) and top-level extras."""
    generation = dict(request.generation_config or {})
    top_level: dict[str, Any] = {}
    for key, value in request.provider_args.items():
        if value is None:
            continue
        if key in _TOP_LEVEL:
            top_level[_TOP_LEVEL[key]] = value
        elif key in ("stop", "stop_sequences", "stopSequences"):
            generation["stopSequences"] = stop_sequences(value)
        else:
            generation[_GENERATION_ALIASES.get(key) or _camel(key)] = value
    return generation, top_level


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


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
                )
            ]
        text = part.get("text")
        if not text:
            return []
        return [ThinkingDelta(text) if part.get("thought") else TextDelta(text)]

    def _usage(self, metadata: dict[str, Any] | None) -> list[ProviderEvent]:
        if not metadata:
            return []
        prompt = metadata.get("promptTokenCount")
        output = metadata.get("candidatesTokenCount")
        thoughts = metadata.get("thoughtsTokenCount")
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
        details={"status": status},
    )
