"""How the fake upstreams read a tool round back out of a request, one reader per format.

Each reader finds the model's last turn and the tool results right after it, and raises
`WrongFormat` where the request breaks a rule of that provider (field names, block order,
where results go, how a failed result is marked), the way the real API would refuse it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fake_wire import FakeCall, Wire


class WrongFormat(Exception):
    """The request is not in the provider's format; the message says what is wrong."""


@dataclass(frozen=True)
class Result:
    call_id: str | None  # Gemini results carry the call's name instead
    name: str | None
    value: dict[str, Any]


@dataclass(frozen=True)
class Echo:
    """The model's last turn as the request sends it back, and the results after it."""

    rounds: int  # the model's turns in the conversation
    text: str = ""
    thinking: list[tuple[str, str | None]] = field(default_factory=list)
    calls: list[FakeCall] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise WrongFormat(f"{what} must be a list")
    return value


def _only(item: Any, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise WrongFormat(f"{what} must be an object")
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise WrongFormat(f"{what} has fields this API does not know: {', '.join(unknown)}")
    return item


def _object(text: Any, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise WrongFormat(f"{what} is not a JSON object: {text!r}")
    return value


def _turns(messages: list[Any], role: str) -> list[int]:
    return [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == role]


# -- OpenAI Chat Completions --------------------------------------------------------------


def read_openai(body: dict[str, Any]) -> Echo:
    messages = _list(body.get("messages"), "messages")
    turns = _turns(messages, "assistant")
    if not turns:
        return Echo(0)
    fields = {"role", "content", "name", "tool_calls", "refusal", "audio"}
    turn = _only(messages[turns[-1]], fields, "the assistant message")
    calls = [_openai_call(c) for c in _list(turn.get("tool_calls") or [], "tool_calls")]
    results: list[Result] = []
    for message in messages[turns[-1] + 1 :]:
        if message.get("role") != "tool":
            break
        _only(message, {"role", "content", "tool_call_id"}, "a tool message")
        value = _object(_openai_text(message.get("content")), "a tool message's content")
        results.append(Result(message.get("tool_call_id"), None, value))
    return Echo(len(turns), _openai_text(turn.get("content")), [], calls, results)


def _openai_call(call: Any) -> FakeCall:
    call = _only(call, {"id", "type", "function"}, "a tool call")
    function = _only(call.get("function"), {"name", "arguments"}, "a tool call's function")
    arguments = _object(function.get("arguments"), "a tool call's arguments string")
    return FakeCall(call.get("id"), function.get("name", ""), arguments)


def _openai_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text", "") for p in _list(content, "content") if p.get("type") == "text")


# -- Anthropic Messages -------------------------------------------------------------------

# Block kinds of an assistant turn: their place in the order, and their fields.
_ANTHROPIC_BLOCKS = {
    "thinking": (0, {"type", "thinking", "signature"}),
    "redacted_thinking": (0, {"type", "data"}),
    "text": (1, {"type", "text", "citations", "cache_control"}),
    "tool_use": (2, {"type", "id", "name", "input", "cache_control"}),
}


def read_anthropic(body: dict[str, Any]) -> Echo:
    messages = _list(body.get("messages"), "messages")
    turns = _turns(messages, "assistant")
    if not turns:
        return Echo(0)
    content = messages[turns[-1]].get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    thinking: list[tuple[str, str | None]] = []
    text: list[str] = []
    calls: list[FakeCall] = []
    phase = 0
    for block in _list(blocks, "the assistant content"):
        kind = block.get("type")
        if kind not in _ANTHROPIC_BLOCKS:
            raise WrongFormat(f"unexpected block in the assistant turn: {kind!r}")
        order, fields = _ANTHROPIC_BLOCKS[kind]
        if order < phase:
            raise WrongFormat(f"a {kind} block came after text or tool_use blocks")
        phase = order
        _only(block, fields, f"a {kind} block")
        if kind == "thinking":
            if not block.get("signature"):
                raise WrongFormat("a thinking block came back without its signature")
            thinking.append((block.get("thinking", ""), block["signature"]))
        elif kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(FakeCall(block.get("id"), block.get("name", ""), block.get("input") or {}))
    following = messages[turns[-1] + 1 : turns[-1] + 2]
    results = _anthropic_results(following[0]) if following else []
    return Echo(len(turns), "".join(text), thinking, calls, results)


def _anthropic_results(turn: dict[str, Any]) -> list[Result]:
    if turn.get("role") != "user":
        raise WrongFormat("tool results must be in the user turn right after the tool_use")
    results: list[Result] = []
    blocks = _list(turn.get("content"), "the user content with tool results")
    for position, block in enumerate(blocks):
        if block.get("type") != "tool_result":
            continue
        if position != len(results):
            raise WrongFormat("tool_result blocks must come first in the user turn")
        fields = {"type", "tool_use_id", "content", "is_error", "cache_control"}
        _only(block, fields, "a tool_result block")
        value = _object(_anthropic_text(block.get("content")), "a tool_result's content")
        if (value.get("success") is False) != (block.get("is_error") is True):
            raise WrongFormat("is_error must be true exactly when the result has success: false")
        results.append(Result(block.get("tool_use_id"), None, value))
    return results


def _anthropic_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in _list(content, "content") if b.get("type") == "text")


# -- Gemini -------------------------------------------------------------------------------


def read_gemini(body: dict[str, Any]) -> Echo:
    contents = _list(body.get("contents"), "contents")
    turns = _turns(contents, "model")
    if not turns:
        return Echo(0)
    text: list[str] = []
    calls = []
    for part in _list(contents[turns[-1]].get("parts"), "the model's parts"):
        part = _only(part, {"text", "thought", "functionCall", "thoughtSignature"}, "a part")
        if "functionCall" in part:
            call = _only(part["functionCall"], {"name", "args", "id"}, "a functionCall")
            signature = part.get("thoughtSignature")
            calls.append(FakeCall(None, call.get("name", ""), call.get("args") or {}, signature))
        elif not part.get("thought"):
            text.append(part.get("text", ""))
    following = contents[turns[-1] + 1 : turns[-1] + 2]
    results = _gemini_results(following[0]) if following else []
    return Echo(len(turns), "".join(text), [], calls, results)


def _gemini_results(content: dict[str, Any]) -> list[Result]:
    if content.get("role") not in ("user", "function"):
        raise WrongFormat("function responses must be in the content right after the calls")
    results: list[Result] = []
    for part in _list(content.get("parts"), "the function response parts"):
        if "functionResponse" not in part:
            continue
        response = _only(part["functionResponse"], {"name", "response", "id"}, "a response")
        if not isinstance(response.get("response"), dict):
            raise WrongFormat("functionResponse.response must be an object")
        results.append(Result(None, response.get("name"), response["response"]))
    return results


# -- Bedrock Converse (converse_stream keyword arguments) --------------------------------


def read_converse(body: dict[str, Any]) -> Echo:
    messages = _list(body.get("messages"), "messages")
    turns = _turns(messages, "assistant")
    if not turns:
        return Echo(0)
    thinking: list[tuple[str, str | None]] = []
    text: list[str] = []
    calls: list[FakeCall] = []
    for block in _list(messages[turns[-1]].get("content"), "the assistant content"):
        if "reasoningContent" in block:
            if text or calls:
                raise WrongFormat("reasoningContent must come before text and toolUse")
            reasoning = block["reasoningContent"].get("reasoningText")
            if reasoning is not None:
                thinking.append((reasoning.get("text", ""), reasoning.get("signature")))
        elif "text" in block:
            text.append(block["text"])
        elif "toolUse" in block:
            use = _only(block["toolUse"], {"toolUseId", "name", "input"}, "a toolUse")
            calls.append(
                FakeCall(use.get("toolUseId"), use.get("name", ""), use.get("input") or {})
            )
    following = messages[turns[-1] + 1 : turns[-1] + 2]
    results = _converse_results(following[0]) if following else []
    return Echo(len(turns), "".join(text), thinking, calls, results)


def _converse_results(message: dict[str, Any]) -> list[Result]:
    results: list[Result] = []
    for block in _list(message.get("content"), "the user content with tool results"):
        if "toolResult" not in block:
            continue
        result = _only(block["toolResult"], {"toolUseId", "content", "status"}, "a toolResult")
        value = _converse_value(_list(result.get("content"), "toolResult.content"))
        if (value.get("success") is False) != (result.get("status") == "error"):
            raise WrongFormat('status must be "error" exactly when the result has success: false')
        results.append(Result(result.get("toolUseId"), None, value))
    return results


def _converse_value(content: list[Any]) -> dict[str, Any]:
    if len(content) != 1:
        raise WrongFormat("a toolResult must hold one content block")
    block = content[0]
    if isinstance(block.get("json"), dict):
        return dict(block["json"])
    if isinstance(block.get("text"), str):
        _object(block["text"], "a toolResult's text")
        raise WrongFormat("a JSON object result must be sent as a json block, not as text")
    raise WrongFormat(f"unexpected toolResult content: {block}")


READERS: dict[Wire, Callable[[dict[str, Any]], Echo]] = {
    "openai": read_openai,
    "anthropic": read_anthropic,
    "gemini": read_gemini,
    "converse": read_converse,
}
