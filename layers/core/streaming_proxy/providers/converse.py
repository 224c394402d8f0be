"""The Converse request for an OpenAI-style one: the keyword arguments of `converse_stream`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..errors import ValidationFailed
from .base import LlmRequest
from .settings import converse_settings
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
    reasoning_blocks_of,
    tool_calls_of,
    tool_result_of,
)

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
# provider_args that are not model parameters: the client's region, and top-level fields.
_TOP_LEVEL = {
    "guardrailConfig": "guardrailConfig",
    "guardrail_config": "guardrailConfig",
    "performanceConfig": "performanceConfig",
    "performance_config": "performanceConfig",
}
_NOT_MODEL_FIELDS = frozenset({"region", "additionalModelRequestFields", *_TOP_LEVEL})


def converse_request(request: LlmRequest) -> dict[str, Any]:
    """The `converse_stream` keyword arguments for an OpenAI-style request."""
    if not request.model:
        raise ValidationFailed("bedrock requires payload.model (a model or inference profile id)")
    args = request.provider_args
    messages = converse_messages(request.messages)
    body: dict[str, Any] = {"modelId": request.model, "messages": messages}
    system = instructions_of(request.messages)
    if system:
        body["system"] = [{"text": system}]
    tool_config = _tool_config(request, messages)
    if tool_config:
        body["toolConfig"] = tool_config
    top, model_fields = converse_settings(request, tool_config)
    body.update(top.fields)
    # Unknown providerArgs are the model's own request fields, after any given as a whole.
    native = dict(args.get("additionalModelRequestFields") or {})
    native.update((k, v) for k, v in args.items() if k not in _NOT_MODEL_FIELDS)
    extra = model_fields.combine(native)
    if extra:
        body["additionalModelRequestFields"] = extra
    body.update((_TOP_LEVEL[k], v) for k, v in args.items() if k in _TOP_LEVEL)
    return body


def converse_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as Converse turns, strictly alternating user/assistant as Converse demands."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if is_instruction(message):
            continue
        if role == "user":
            turns.append({"role": "user", "content": _blocks(message.get("content"))})
        elif role == "assistant":
            turns.append({"role": "assistant", "content": _assistant_blocks(message)})
        elif role == "tool":
            turns.append({"role": "user", "content": [_tool_result(message)]})
        else:
            raise ValidationFailed(f"unsupported message role: {role!r}")
    return merge_adjacent([t for t in turns if t["content"]], "content")


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Reasoning first (signed, so extended thinking survives tool rounds), text, tool uses."""
    blocks = [_reasoning(block) for block in reasoning_blocks_of(message)]
    blocks += _blocks(message.get("content"))
    blocks += [
        {"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}}
        for c in tool_calls_of(message)
    ]
    return blocks


def _reasoning(block: ReasoningBlock) -> dict[str, Any]:
    if isinstance(block, RedactedBlock):
        # The adapter turned the streamed bytes into base64 text; Converse wants the bytes.
        try:
            data = base64.b64decode(block.data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValidationFailed("a redacted_thinking block's data must be base64") from e
        return {"reasoningContent": {"redactedContent": data}}
    text: dict[str, Any] = {"text": block.thinking}
    if block.signature:
        text["signature"] = block.signature
    return {"reasoningContent": {"reasoningText": text}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [
        {"text": part.text} if isinstance(part, TextPart) else {"image": _image(part)}
        for part in content_parts(content)
    ]


def _image(part: ImagePart) -> dict[str, Any]:
    if part.data is None:
        raise ValidationFailed("bedrock takes images only as data: URLs")
    image_format = _IMAGE_FORMATS.get(part.mime.lower())
    if image_format is None:
        raise ValidationFailed(f"bedrock does not take {part.mime} images")
    return {"format": image_format, "source": {"bytes": part.data}}


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    result = tool_result_of(message)
    content = (
        [{"json": result.value}] if isinstance(result.value, dict) else [{"text": result.text}]
    )
    block: dict[str, Any] = {"toolUseId": result.call_id, "content": content}
    if result.failed:
        block["status"] = "error"
    return {"toolResult": block}


def _tool_config(request: LlmRequest, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = function_tools(request.tools)
    choice = parse_tool_choice(request.tool_choice)
    if not tools:
        return None
    uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    # Converse has no "none": leave the tools out, unless the history holds tool blocks,
    # which Converse rejects without a toolConfig.
    if choice is not None and choice.mode == "none" and not uses_tools:
        return None
    config: dict[str, Any] = {
        "tools": [
            {
                "toolSpec": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "inputSchema": {"json": t.parameters},
                }
            }
            for t in tools
        ]
    }
    # "auto" is the default and the only choice every Bedrock model accepts: send no toolChoice.
    if choice is not None and choice.mode == "required":
        config["toolChoice"] = {"any": {}}
    elif choice is not None and choice.mode == "function":
        config["toolChoice"] = {"tool": {"name": choice.name}}
    return config
