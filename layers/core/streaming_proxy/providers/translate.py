"""Reading OpenAI-style requests once for adapters that speak other formats, and their events."""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import unquote_to_bytes

from .. import native
from ..errors import UpstreamError, ValidationFailed
from ..events import ProviderEvent
from ..textcheck import model_json


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image by URL; `data` and `mime` are set when the URL was a `data:` URL."""

    url: str
    mime: str
    data: bytes | None = None

    def base64(self) -> str:
        return base64.b64encode(self.data or b"").decode("ascii")


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One assistant tool call from the history, arguments already parsed; `signature` is
    Gemini's `thoughtSignature` of the call (the `thought_signature` extension field)."""

    id: str
    name: str
    arguments: dict[str, Any]
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    """A reasoning block of an assistant turn (`reasoning_blocks` extension field)."""

    thinking: str
    signature: str | None


@dataclass(frozen=True, slots=True)
class RedactedBlock:
    """An encrypted reasoning block: opaque `data`, sent back exactly as received."""

    data: str


ReasoningBlock = ThinkingBlock | RedactedBlock


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool message: the call it answers, its text, and that text as JSON when it is."""

    call_id: str
    text: str
    value: Any

    @property
    def failed(self) -> bool:
        """The tool said it failed: a JSON object with `"success": false`."""
        return isinstance(self.value, dict) and self.value.get("success") is False


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: dict[str, Any]


ToolMode = Literal["auto", "none", "required", "function"]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`mode` "function" forces the tool `name`; "required" forces some tool."""

    mode: ToolMode
    name: str | None = None


def content_parts(content: Any) -> list[ContentPart]:
    """An OpenAI message content (string, parts list or None) as text and image parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise ValidationFailed("message content must be a string or a list of parts")
    parts: list[ContentPart] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                parts.append(TextPart(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise ValidationFailed("an image_url part needs image_url.url")
            parts.append(image_part(url))
        else:
            raise ValidationFailed(f"unsupported message content part type: {kind!r}")
    return parts


def text_of(content: Any) -> str:
    """Only the text of a message content, parts joined by newlines."""
    return "\n".join(p.text for p in content_parts(content) if isinstance(p, TextPart))


def image_part(url: str) -> ImagePart:
    """A `data:` URL decoded to bytes, or an http(s) URL with its MIME type guessed."""
    if url.startswith("data:"):
        header, sep, payload = url[5:].partition(",")
        if not sep:
            raise ValidationFailed("malformed data: URL in an image part")
        mime, _, params = header.partition(";")
        try:
            if params.split(";")[-1] == "base64":
                data = base64.b64decode(payload, validate=True)
            else:
                data = unquote_to_bytes(payload)
        except (binascii.Error, ValueError) as e:
            raise ValidationFailed("invalid base64 in an image data: URL") from e
        return ImagePart(url=url, mime=mime or "application/octet-stream", data=data)
    if url.startswith(("https://", "http://")):
        guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
        return ImagePart(url=url, mime=guessed or "image/jpeg")
    raise ValidationFailed("image URLs must be data:, https: or http: URLs")


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Tool call arguments (a JSON object string, or already an object) as a dict. The
    string is read as a model's JSON (`model_json`): `NaN`, `1e999` or nesting past
    MAX_JSON_DEPTH are no JSON (Python's parser takes the first two, which no encoder then
    sends, and the last crashed it), a lone surrogate becomes U+FFFD."""
    if raw is None or raw == "":
        return {}
    value = raw
    if isinstance(raw, str):
        try:
            value = model_json(raw)
        except ValueError as e:
            raise ValidationFailed("tool call arguments must be a JSON object") from e
    if not isinstance(value, dict):
        raise ValidationFailed("tool call arguments must be a JSON object")
    return value


def parse_json_value(text: str) -> Any:
    """A tool result text as JSON if it is clean JSON (`model_json`), else None: the text
    then goes as it is."""
    try:
        return model_json(text)
    except ValueError:
        return None


def tool_calls_of(message: dict[str, Any]) -> list[ToolCall]:
    """The tool calls of an assistant message."""
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ValidationFailed("assistant tool_calls must be a list")
    result = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValidationFailed("each tool call needs function.name")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise ValidationFailed("each tool call needs an id")
        signature = call.get("thought_signature")
        if signature is not None and not isinstance(signature, str):
            raise ValidationFailed("a tool call's thought_signature must be a string")
        arguments = parse_arguments(function.get("arguments"))
        result.append(ToolCall(call_id, function["name"], arguments, signature or None))
    return result


def reasoning_blocks_of(message: dict[str, Any]) -> list[ReasoningBlock]:
    """The `reasoning_blocks` of an assistant message, in order."""
    blocks = message.get("reasoning_blocks") or []
    if not isinstance(blocks, list):
        raise ValidationFailed("reasoning_blocks must be a list")
    return [_reasoning_block(block) for block in blocks]


def _reasoning_block(block: Any) -> ReasoningBlock:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        signature = block.get("signature")
        if signature is None or isinstance(signature, str):
            return ThinkingBlock(block["thinking"], signature or None)
    if kind == "redacted_thinking" and isinstance(block.get("data"), str) and block["data"]:
        return RedactedBlock(block["data"])
    raise ValidationFailed(
        'each reasoning block must be {"type": "thinking", "thinking", "signature"} '
        'or {"type": "redacted_thinking", "data"}'
    )


def tool_call_id_of(message: dict[str, Any]) -> str:
    """The `tool_call_id` a tool message answers."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise ValidationFailed("tool messages need a tool_call_id")
    return call_id


def tool_result_of(message: dict[str, Any]) -> ToolResult:
    """A tool message's result; its content is a string or a list of text parts."""
    text = text_of(message.get("content"))
    return ToolResult(tool_call_id_of(message), text, parse_json_value(text))


def function_tools(tools: Iterable[dict[str, Any]] | None) -> list[FunctionTool]:
    """OpenAI function tools (`{"type":"function","function":{...}}` or the bare function)."""
    result = []
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValidationFailed("each tool needs function.name")
        if tool.get("type", "function") != "function":
            raise ValidationFailed(f"unsupported tool type: {tool.get('type')!r}")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        result.append(FunctionTool(function["name"], function.get("description"), parameters))
    return result


def parse_tool_choice(choice: Any) -> ToolChoice | None:
    """A tool choice in any spelling the contract takes (native.py reads them all into
    OpenAI's), as the mode each adapter renders in its own format."""
    try:
        value = native.tool_choice(choice)
    except ValueError as e:
        raise ValidationFailed(
            str(e), fields=[{"field": "payload.toolChoice", "message": str(e)}]
        ) from e
    if value is None:
        return None
    if isinstance(value, dict):
        return ToolChoice("function", value["function"]["name"])
    return ToolChoice(cast(ToolMode, value))


def openai_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    """A tool choice as OpenAI's `tool_choice` (also the internal form)."""
    if choice.mode == "function":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def merge_adjacent(turns: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Consecutive turns of the same role as one turn, their `key` lists concatenated."""
    merged: list[dict[str, Any]] = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1] = {**merged[-1], key: [*merged[-1][key], *turn[key]]}
        else:
            merged.append(turn)
    return merged


def is_instruction(message: dict[str, Any]) -> bool:
    """System and developer messages become the other formats' separate instructions."""
    return message.get("role") in ("system", "developer")


def instructions_of(messages: Iterable[dict[str, Any]]) -> str:
    """The text of all system and developer messages, in order."""
    texts = [text_of(m.get("content")) for m in messages if is_instruction(m)]
    return "\n\n".join(t for t in texts if t)


def event_data(data: str, provider: str) -> dict[str, Any]:
    """One stream event's JSON payload; anything but a JSON object is an upstream fault."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise UpstreamError(f"{provider} sent a stream event that is not JSON") from e
    if not isinstance(value, dict):
        raise UpstreamError(f"{provider} sent a stream event that is not a JSON object")
    return value


def read_event(
    data: str, provider: str, feed: Callable[[dict[str, Any]], list[ProviderEvent]]
) -> list[ProviderEvent]:
    """The events `feed` makes of one stream event's JSON object. `feed` reads the formats'
    fields as documented; a value of another JSON type (a string where an object belongs, a
    list for an index) breaks it, and that is the provider's fault: an UpstreamError."""
    value = event_data(data, provider)
    try:
        return feed(value)
    except (AttributeError, TypeError, KeyError, IndexError) as e:
        raise UpstreamError(f"{provider} sent a stream event of an unexpected shape") from e
