"""What the pages hear of a tool round: `function_call` and `llmToolCall` bodies.

Both must fit one WebSocket message (API Gateway refuses a post over 128 KB, and a lane
counts such a message dropped, leaving its seq missing for every page). A call whose
arguments are too large for that never reaches a page: its `function_call` entry says how
large they were instead of carrying them, no `llmToolCall` is sent for it, and a frontend
call fails at once (the model is told) instead of waiting its whole timeout for an answer
no page can give.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..envelopes import MAX_CONTENT_BYTES, encode
from ..events import PlannedCall
from ..outcome import ToolCall, function_entry


def function_call_content(calls: Sequence[PlannedCall | ToolCall]) -> dict[str, Any]:
    """`function_call.content`: the calls of a round (the proxy's ids), or the calls a
    stream ends with; the largest arguments left out (`argumentsBytes`) until it fits."""
    entries = [function_entry(c.name, c.arguments, c.id) for c in calls]
    if fits({"functions": entries}):
        return {"functions": entries}
    sizes = [json_bytes(entry["arguments"]) for entry in entries]
    for i in sorted(range(len(entries)), key=sizes.__getitem__, reverse=True):
        left_out = {"userMessage": None, "arguments": None, "argumentsBytes": sizes[i]}
        entries[i] = {**entries[i], **left_out}
        if fits({"functions": entries}):
            break
    return {"functions": entries}


def llm_tool_call_fields(call: PlannedCall) -> dict[str, Any]:
    """An `llmToolCall` envelope's own fields. `action` as well as `type`: Klai page
    handlers test `data.action`; `functions` is Klai's options shape."""
    return {
        "action": "llmToolCall",
        "toolCallId": call.id,
        "toolName": call.tool_name,
        "arguments": call.arguments,
        "functions": [{"name": call.tool_name, "arguments": call.arguments}],
    }


def json_bytes(value: Any) -> int:
    """Bytes `value` takes as compact JSON in a message."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "replace"))


def fits(fields: dict[str, Any]) -> bool:
    """Whether an envelope's own fields leave room for the rest of it in one message."""
    return len(encode(fields)) <= MAX_CONTENT_BYTES


def reaches_pages(call: PlannedCall) -> bool:
    """Whether a frontend call's `llmToolCall` fits one WebSocket message."""
    return fits(llm_tool_call_fields(call))


def as_tool_calls(calls: tuple[PlannedCall, ...]) -> list[ToolCall]:
    """Calls left for the backend, as the outcome (and `stream:false`) reports them."""
    return [
        ToolCall(
            c.id,
            c.name,
            c.arguments
            if isinstance(c.arguments, str)
            else json.dumps(c.arguments, ensure_ascii=False),
        )
        for c in calls
    ]
