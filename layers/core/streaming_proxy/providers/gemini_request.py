"""The GenerateContentRequest for an OpenAI-style request, and the model's URL path."""

from __future__ import annotations

import re
from typing import Any

from ..errors import ValidationFailed
from .base import LlmRequest
from .settings import gemini_settings
from .translate import (
    TextPart,
    ToolCall,
    content_parts,
    function_tools,
    instructions_of,
    is_instruction,
    merge_adjacent,
    parse_tool_choice,
    tool_calls_of,
    tool_result_of,
)

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

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
            # reasoning_blocks stay out: Gemini's thinking is carried by the call signatures.
            parts = _parts(message.get("content"))
            for call in tool_calls_of(message):
                call_names[call.id] = call.name
                parts.append(_function_call(call))
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


def _function_call(call: ToolCall) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
    if call.signature:
        part["thoughtSignature"] = call.signature
    return part


def _function_response(message: dict[str, Any], call_names: dict[str, str]) -> dict[str, Any]:
    """A tool result as a functionResponse, named after the call it answers (Gemini matches
    results to calls by name, so a result for no known call cannot be sent)."""
    result = tool_result_of(message)
    name = call_names.get(result.call_id)
    if name is None:
        raise ValidationFailed(
            f"tool message answers tool_call_id {result.call_id!r}, "
            "which no earlier assistant tool_calls entry has"
        )
    value = result.value
    # `response` must be an object; Gemini's documented key for a plain result is "output".
    response = (
        value if isinstance(value, dict) else {"output": result.text if value is None else value}
    )
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
    """generationConfig (the settings, then the request's own Gemini-only generationConfig
    fields, then providerArgs camelCased) and the top-level fields among providerArgs."""
    settings = gemini_settings(request)
    generation = settings.combine(request.generation_config or {}, "payload.generationConfig.")
    top_level: dict[str, Any] = {}
    native: dict[str, Any] = {}
    for key, value in request.provider_args.items():
        if key in _TOP_LEVEL:
            top_level[_TOP_LEVEL[key]] = value
        else:
            native[_camel(key)] = value
    generation.update(settings.combine(native))
    return generation, top_level


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)
