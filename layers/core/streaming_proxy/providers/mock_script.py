"""The mock's scripted mode: a conversation in rounds, for the tool loop without an LLM.

`providerArgs.script` is a list of rounds; each says what the mock answers in that round:
text, tool calls, or both (text first). The round is the number of assistant turns with
tool calls since the last user message, so a tool loop walks through the script; past
the end the last round repeats. A round's text may quote the previous round's results:
`{{message:<tool name>}}` is the `message` field of that tool's result, `{{result:<tool
name>}}` the whole result as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_PLACEHOLDER = re.compile(r"\{\{(message|result):([^}]+)\}\}")


class MockToolCall(BaseModel):
    """A tool call the mock makes after its text."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None


class MockRound(BaseModel):
    """One round of a script: what the mock says and which tools it calls."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str | None = None
    thinking: str | None = None
    # `lambda: []`, not `list`: cheaper at import (docs/architecture.md decision 31).
    tool_calls: list[MockToolCall] = Field(default_factory=lambda: [], alias="toolCalls")


def current_round(script: list[MockRound], messages: list[dict[str, Any]]) -> MockRound:
    """The round the conversation is at (the last one again past the end of the script)."""
    done = sum(
        1
        for m in _since_last_user(messages)
        if m.get("role") == "assistant" and m.get("tool_calls")
    )
    return script[min(done, len(script) - 1)]


def fill(text: str, messages: list[dict[str, Any]]) -> str:
    """`text` with each placeholder replaced by what the previous round's tools answered."""
    results = previous_results(messages)

    def quote(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2).strip()
        if name not in results:
            return f"(no result from {name})"
        result = results[name]
        if kind == "result":
            return json.dumps(result, ensure_ascii=False)
        message = result.get("message") if isinstance(result, dict) else None
        return str(message) if message is not None else json.dumps(result, ensure_ascii=False)

    return _PLACEHOLDER.sub(quote, text)


def previous_results(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Tool name -> result (parsed JSON where it is JSON) of the latest round of calls."""
    names: dict[str, str] = {}
    results: dict[str, Any] = {}
    for message in _since_last_user(messages):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            names = {
                str(call.get("id")): str((call.get("function") or {}).get("name"))
                for call in message["tool_calls"]
            }
            results = {}
        elif message.get("role") == "tool":
            name = names.get(str(message.get("tool_call_id")))
            if name is not None:
                results[name] = _parsed(message.get("content"))
    return results


def _since_last_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return messages[last + 1 :]


def _parsed(content: Any) -> Any:
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        return content
    try:
        return json.loads(content)
    except ValueError:
        return content
