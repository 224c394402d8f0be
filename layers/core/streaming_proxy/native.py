"""Provider-native messages, tools and tool choices (Gemini, Anthropic, Klai's bare tools)
read into the one internal form, OpenAI's, before any provider translates them.

Each function is a pydantic "before" validator of one item: it returns the OpenAI shape, or
raises ValueError saying what cannot be translated, so the 400 names the exact field
(`payload.messages.2.parts.0`). Nothing a caller sends is dropped without an error.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

# The image types every provider that takes bytes accepts (and the image fetcher allows).
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# OpenAI content part types; their own models check them.
_OPENAI_PARTS = frozenset({"text", "image_url", "input_audio", "file"})
_ROLES = {"model": "assistant"}
# Every spelling of a tool choice mode: OpenAI, Anthropic ("any") and Gemini (upper case).
_MODES = {"auto": "auto", "none": "none", "required": "required", "any": "required"}
ToolChoiceValue = str | dict[str, Any]


def role(raw: Any) -> Any:
    """Gemini's `model` role is the assistant's."""
    return _ROLES.get(raw, raw) if isinstance(raw, str) else raw


def content_part(raw: Any) -> Any:
    """One part of a message's `content` list: OpenAI parts as they are, an Anthropic
    `image` block or a Gemini part (`text`, `inlineData`) as the OpenAI part."""
    if not isinstance(raw, dict):
        raise ValueError("a content part must be an object")
    kind = raw.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ValueError("a content part's type must be a string")
    if kind in _OPENAI_PARTS:
        return raw
    if kind == "image":
        return _anthropic_image(raw.get("source"))
    if kind is None:
        return gemini_part(raw)
    raise ValueError(
        f"content part type {kind!r} cannot be translated: use text, image_url, "
        "input_audio, file, or an Anthropic image block"
    )


def gemini_part(raw: Any) -> dict[str, Any]:
    """A Gemini part: `{text}` or `{inlineData: {mimeType, data}}` (an image)."""
    if not isinstance(raw, dict):
        raise ValueError("a Gemini part must be an object")
    if isinstance(raw.get("text"), str):
        return {"type": "text", "text": raw["text"]}
    inline = raw.get("inlineData", raw.get("inline_data"))
    if isinstance(inline, dict):
        mime = inline.get("mimeType", inline.get("mime_type"))
        return _image(mime, inline.get("data"), "inlineData")
    names = ", ".join(sorted(str(key) for key in raw)) or "nothing"
    raise ValueError(
        f"a Gemini part with {names} cannot be translated: only text and inlineData "
        "(png, jpeg, gif or webp images) are; send tool calls as OpenAI tool_calls"
    )


def _anthropic_image(source: Any) -> dict[str, Any]:
    if not isinstance(source, dict):
        source = {}
    if source.get("type") == "base64":
        return _image(source.get("media_type"), source.get("data"), "source")
    url = source.get("url")
    if source.get("type") == "url" and isinstance(url, str) and url:
        return {"type": "image_url", "image_url": {"url": url}}
    raise ValueError(
        'an Anthropic image block needs source {"type": "base64", "media_type", "data"} '
        'or {"type": "url", "url"}'
    )


def _image(mime: Any, data: Any, where: str) -> dict[str, Any]:
    """Inline image bytes as the internal form: an image_url part with a base64 data: URL."""
    if not isinstance(mime, str) or mime not in IMAGE_TYPES:
        raise ValueError(f"{where}: the media type must be one of {', '.join(sorted(IMAGE_TYPES))}")
    if not isinstance(data, str) or not data:
        raise ValueError(f"{where}: data must be a non-empty base64 string")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"{where}: data is not valid base64") from e
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def tool(raw: Any) -> Any:
    """Klai's bare tool `{name, description, parameters?}` (or Anthropic's `input_schema`)
    as an OpenAI function tool; OpenAI's own shape as it is."""
    if not isinstance(raw, dict) or "function" in raw or "name" not in raw:
        return raw
    if raw.get("type", "function") != "function":
        return raw  # the Tool model refuses other types, naming the field
    function = {k: v for k, v in raw.items() if k not in ("type", "input_schema")}
    if "input_schema" in raw and "parameters" not in raw:
        function["parameters"] = raw["input_schema"]
    return {"type": "function", "function": function}


def tool_choice(raw: Any) -> ToolChoiceValue | None:
    """Every tool choice spelling as OpenAI's: "auto", "none", "required" or
    `{"type": "function", "function": {"name"}}`."""
    if raw is None:
        return None
    # The spellings providers use, exactly: lower case, or Gemini's upper case.
    if isinstance(raw, str) and (raw in _MODES or (raw.isupper() and raw.lower() in _MODES)):
        return _MODES[raw.lower()]
    if isinstance(raw, dict):
        name = _forced_name(raw)
        if name is not None:
            return {"type": "function", "function": {"name": name}}
        kind = raw.get("type")
        if len(raw) == 1 and isinstance(kind, str) and kind in _MODES:
            return _MODES[kind]  # Anthropic's {"type": "auto" | "any" | "none"}
    raise ValueError(
        'toolChoice must be "auto", "none", "required", "any" (or Gemini\'s AUTO, ANY, '
        'NONE), {"type": "function", "function": {"name"}}, {"type": "tool", "name"} '
        'or {"name"}'
    )


def _forced_name(raw: dict[str, Any]) -> str | None:
    function = raw.get("function")
    if isinstance(function, dict) and raw.get("type", "function") == "function":
        name = function.get("name")
    elif "function" not in raw and raw.get("type") in ("tool", "function", None):
        name = raw.get("name")
    else:
        return None
    return name if isinstance(name, str) and name else None
